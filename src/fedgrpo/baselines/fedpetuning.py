"""FedPETuning (Zhang et al., ACL Findings 2023): a LoRA adapter of the server model trained on each
client's private, labelled data and averaged with FedAvg (Flower's strategy, `engines.fedavg`).

What travels is the adapter only (`adapter_arrays`: the LoRA matrices as float32 arrays, peft's
``get_peft_model_state_dict``), down to every client and back every round. A client's local update
(`local_update`) loads the global adapter into a fresh LoRA copy of the server base and trains it:

- objective ``sft``: `fedpetuning_local_epochs` epochs over its data (batch `fedpetuning_batch_size`,
  AdamW at `fedpetuning_learning_rate`, constant after warm-up), loss on answer tokens only;
- objective ``grpo``: TRL's GRPO with the run's group size and prompts per step, rewarded by exact
  match on its own labels (the ground-truth reward of `training.policy`), for ``train_steps /
  (rounds x clients)`` steps, so that the whole federation takes as many GRPO steps, and samples as
  many candidates, as FedGRPO's run.

Its weight in the average is the number of items it trained on. `merge_adapter` writes the server's
final model: the base with the global adapter merged in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question

OBJECTIVES = ("sft", "grpo")


def lora_config(config: FedGRPOConfig) -> Any:
    from peft import LoraConfig

    b = config.baselines
    return LoraConfig(r=b.fedpetuning_lora_rank, lora_alpha=b.fedpetuning_lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def _lora_model(config: FedGRPOConfig, base_dir: Path, seed: int) -> tuple[Any, Any]:
    import torch
    from peft import get_peft_model

    from fedgrpo.models.load import load_model

    model, tokenizer = load_model(base_dir)
    torch.manual_seed(seed)  # LoRA's A matrices are drawn at random
    return get_peft_model(model, lora_config(config)), tokenizer


def adapter_arrays(model: Any) -> dict[str, np.ndarray]:
    """The adapter's tensors as float32 numpy arrays (what a FedAvg message carries)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().cpu().numpy() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter(model: Any, arrays: Mapping[str, np.ndarray]) -> None:
    import torch
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


def initial_adapter(config: FedGRPOConfig, base_dir: Path) -> dict[str, np.ndarray]:
    """The server's round-0 adapter (LoRA's own initialisation: B = 0, so it starts as the base)."""
    model, _ = _lora_model(config, base_dir, config.train.train_seed)
    return adapter_arrays(model)


def local_steps(config: FedGRPOConfig) -> int:
    """GRPO steps per client per round: the run's train_steps shared over rounds x clients (at least 1)."""
    return max(1, round(config.train.train_steps / (config.baselines.fedpetuning_rounds * config.data.clients)))


def local_update(config: FedGRPOConfig, base_dir: Path, arrays: Mapping[str, np.ndarray],
                 questions: Sequence[Question], objective: str, round_index: int, client_index: int,
                 work_dir: Path) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
    """One client's round: (its new adapter, its weight = items trained on, metrics)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown FedPETuning objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    seed = config.train.train_seed * 100_003 + round_index * 1_009 + client_index
    if objective == "sft":
        return _local_sft(config, base_dir, arrays, questions, seed)
    return _local_grpo(config, base_dir, arrays, questions, seed, work_dir)


def _local_sft(config: FedGRPOConfig, base_dir: Path, arrays: Mapping[str, np.ndarray],
               questions: Sequence[Question], seed: int) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
    from fedgrpo.models.load import supervised_pairs
    from fedgrpo.models.pretrain import train_supervised

    b = config.baselines
    model, tokenizer = _lora_model(config, base_dir, seed)
    load_adapter(model, arrays)
    pairs = supervised_pairs(questions, PromptStyle.from_config(config.prompts))
    steps = b.fedpetuning_local_epochs * math.ceil(len(pairs) / b.fedpetuning_batch_size)
    losses = train_supervised(model, tokenizer, pairs, steps=steps, batch_size=b.fedpetuning_batch_size,
                              learning_rate=b.fedpetuning_learning_rate, seed=seed, schedule="constant")
    return adapter_arrays(model), len(pairs), {"loss": float(np.mean(losses)) if losses else 0.0}


def _local_grpo(config: FedGRPOConfig, base_dir: Path, arrays: Mapping[str, np.ndarray],
                questions: Sequence[Question], seed: int,
                work_dir: Path) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
    import torch

    from fedgrpo.training.policy import gold_reward
    from fedgrpo.training.trainer import GRPOSettings, build_grpo_trainer

    b = config.baselines
    steps = local_steps(config)
    settings = dataclasses.replace(
        GRPOSettings.from_config(config), max_steps=steps, learning_rate=b.fedpetuning_learning_rate, seed=seed,
        save_steps=steps + 1, steps_per_generation=1, overlap_rewards=False, lora_rank=b.fedpetuning_lora_rank,
        lora_alpha=b.fedpetuning_lora_alpha, lora_dropout=0.0, lora_target_modules=("all-linear",))
    reward = gold_reward(config, questions)
    torch.manual_seed(seed)
    trainer = build_grpo_trainer(base_dir, questions, reward, settings, work_dir)
    load_adapter(trainer.model, arrays)
    trainer.remove_callback(_printer())
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    used = steps * settings.prompts_per_step
    return adapter_arrays(trainer.model), used, {"reward": float(np.mean(rewards)) if rewards else 0.0}


def _printer() -> Any:
    from transformers.trainer_callback import PrinterCallback

    return PrinterCallback


def merge_adapter(config: FedGRPOConfig, base_dir: Path, arrays: Mapping[str, np.ndarray], out: Path) -> Path:
    """The server's final model: `base_dir` with the global adapter merged in, saved to `out`."""
    model, tokenizer = _lora_model(config, base_dir, 0)
    load_adapter(model, arrays)
    model.save_pretrained(str(out.parent / "final-adapter"))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
