"""The thin adapter to TRL 1.16's ``GRPOTrainer``: settings, dataset, checkpoints, group layout.

FedGRPO owns a handful of GRPO knobs (`GRPOSettings`, derived from the config); every other
``GRPOConfig`` field passes through `GRPOSettings.extra` untouched (``bf16``, ``use_vllm``,
``gradient_accumulation_steps``, ...), so GPU options need no code here. The federated reward
enters through TRL's public ``reward_funcs`` hook only (an ``async def`` reward; ``None`` for a
missing reward): no subclass, no private method, which keeps this module small across TRL releases.
The one exception is ``overlap_rewards`` (on by default only for the Flower Deployment engine):
`training.overlap`'s ``GRPOTrainer`` subclass, guarded by a test against the installed TRL.

The federated group is TRL's group (``flower-trl-notes.md`` section 2.5): with ``num_generations =
M*G`` TRL samples M*G candidates per question and normalises over all of them, which is
``core/advantage.py`` with ``pooling="joint"``.

Facts about TRL 1.16 this module relies on (pinned by ``tests/integration/test_trainer.py``):

- Layout of one reward call. TRL's ``RepeatSampler`` yields each prompt index ``num_generations``
  times in a row; generation keeps that order. So a reward call receives ``P * num_generations``
  completions where completions ``[p*N, (p+1)*N)`` all belong to the p-th question of the call, and
  the advantages are computed over ``rewards.view(-1, N)`` in that same order. Only *after* scoring
  does TRL shuffle the completions for the loss (``shuffle_sequence_dict``), which does not affect
  grouping. `group_by_question` checks the layout on every call rather than trusting it.
- A reward call sees every completion of one optimizer step (with the defaults here:
  ``gradient_accumulation_steps = steps_per_generation = 1``): ``prompts_per_step`` questions.
  With ``steps_per_generation = k``, one call holds the k steps' questions.
- ``None`` becomes NaN; a NaN reward is left out of its group's mean and std and gets advantage 0.
- The sampler drops an incomplete last chunk of prompts, so a dataset with fewer questions than
  ``prompts_per_step`` would train on nothing; `build_grpo_trainer` refuses it.
- ``GRPOConfig`` defaults that are wrong for us: ``bf16`` (None -> True),
  ``gradient_checkpointing`` (True), ``learning_rate`` (1e-6), ``logging_steps`` (10),
  ``loss_type`` (``"dapo"``).

Heavy imports (torch, datasets, trl) happen inside functions: importing this module is cheap, so
reward code can use `group_by_question` without loading TRL.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError

# (prompts, completions, question_id, domain, trainer_state, **kwargs) -> list[float | None]
RewardFn = Callable[..., Any]


@dataclass(frozen=True)
class GRPOSettings:
    """The GRPO knobs FedGRPO owns, derived from the config (`from_config`, the one source of
    their values and checks); any other ``GRPOConfig`` field comes from `extra` (the config's
    ``grpo_args``). See `fedgrpo.config.TrainConfig` for what each knob does.

    ``num_generations`` is the federated group M*G; ``overlap_rewards`` is the config's
    `FedGRPOConfig.uses_overlap` (auto resolved for the engine).
    """

    num_generations: int
    prompts_per_step: int
    max_steps: int
    learning_rate: float
    temperature: float
    max_completion_length: int
    loss_type: str
    scale_rewards: str
    beta: float
    seed: int
    save_steps: int
    steps_per_generation: int
    overlap_rewards: bool
    style: PromptStyle  # how questions become prompts (text, or chat messages TRL renders)
    lora_rank: int  # 0: full fine-tuning
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen means frozen: a caller's later edit of its dict must not change these settings.
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @classmethod
    def from_config(cls, config: FedGRPOConfig) -> GRPOSettings:
        t, f = config.train, config.federation
        return cls(
            num_generations=f.experts_per_question * f.generations_per_expert,
            prompts_per_step=t.prompts_per_step, max_steps=t.train_steps, learning_rate=t.learning_rate,
            temperature=t.temperature, max_completion_length=t.max_completion_length,
            loss_type=t.loss_type, scale_rewards=t.scale_rewards, beta=t.beta, seed=t.train_seed,
            save_steps=generation_aligned(t.save_steps, t.steps_per_generation),
            steps_per_generation=t.steps_per_generation,
            overlap_rewards=config.uses_overlap, style=PromptStyle.from_config(config.prompts),
            lora_rank=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
            lora_target_modules=t.lora_target_modules, extra=t.grpo_extra,
        )

    def peft_config(self) -> Any:
        """TRL's `peft_config` for the policy: a LoRA adapter, or None for full fine-tuning."""
        if not self.lora_rank:
            return None
        from peft import LoraConfig

        modules = self.lora_target_modules
        return LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=modules[0] if modules == ("all-linear",) else list(modules),
                          task_type="CAUSAL_LM")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


def generation_aligned(save_steps: int, steps_per_generation: int) -> int:
    """`save_steps` rounded up to a multiple of `steps_per_generation`, so that a checkpoint never
    falls inside a generation batch: TRL keeps the batch's later steps' inputs in memory only (and
    counts generations from the trainer's start), so a run resumed mid-batch would generate anew at
    other steps than the uninterrupted run (measured: save_steps 10 at 4 steps per generation, killed
    after step 10, trained on other samples from step 11 on).

    >>> generation_aligned(10, 4), generation_aligned(50, 1), generation_aligned(8, 4)
    (12, 50, 8)
    """
    return -(-save_steps // steps_per_generation) * steps_per_generation


def grpo_config_kwargs(settings: GRPOSettings, output_dir: str | Path) -> dict[str, Any]:
    """The ``GRPOConfig`` keyword arguments for `settings`; unknown `extra` names: ConfigError.

    CPU-safe defaults (``use_cpu`` without CUDA, no bf16, no activation checkpointing, no
    reporting, constant learning rate, a log line per step, no completion tables), overridden by
    `extra`, then our knobs, which `extra` cannot touch (the config refuses them in grpo_args).
    """
    import torch
    from trl import GRPOConfig

    known = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    for key in settings.extra:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown GRPOConfig option {key!r} in grpo_args{hint}")
    return {
        # CPU-safe defaults (flower-trl-notes 2.6, tiny-recipe.md); `extra` may override them.
        "use_cpu": not torch.cuda.is_available(),
        "bf16": False,  # GRPOConfig turns bf16 on when unset
        "report_to": "none",
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "log_completions": False,
        "remove_unused_columns": False,  # keep question_id and domain for the reward function
        "save_strategy": "steps",
        **_checkpointing_default(settings.extra),
        **settings.extra,
        # Ours, never overridden.
        "output_dir": str(output_dir),
        "num_generations": settings.num_generations,
        "per_device_train_batch_size": settings.completions_per_step,  # completions, not prompts
        "max_steps": settings.max_steps,
        "learning_rate": settings.learning_rate,
        "temperature": settings.temperature,
        "max_completion_length": settings.max_completion_length,
        "loss_type": settings.loss_type,
        "scale_rewards": settings.scale_rewards,
        "beta": settings.beta,
        "seed": settings.seed,
        "save_steps": settings.save_steps,
        "steps_per_generation": settings.steps_per_generation,
    }


def _checkpointing_default(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Activation checkpointing off unless `extra` says otherwise (under either name).

    GRPOConfig defaults ``gradient_checkpointing=True``, which only costs time on tiny models. In
    transformers 5.24 that name is a deprecated alias of ``activation_checkpointing``, read (with a
    FutureWarning) only when the new name is unset; so we set the new name, and leave both alone
    when the caller passed either.
    """
    if "gradient_checkpointing" in extra or "activation_checkpointing" in extra:
        return {}
    return {"activation_checkpointing": False}


def build_grpo_dataset(questions: Sequence[Question], style: PromptStyle) -> Any:
    """A ``datasets.Dataset`` with columns ``prompt`` (text, or chat messages: TRL's conversational
    prompts, which it renders with the tokenizer's chat template), ``question_id``, ``domain``; no
    answers."""
    from datasets import Dataset

    ids = [q.question_id for q in questions]
    if len(set(ids)) != len(ids):
        # Groups are keyed by question_id: two rows with one id would be indistinguishable groups.
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(
            f"training questions must have distinct question_ids; repeated: {repeated[:5]}"
        )
    return Dataset.from_dict(
        {
            "prompt": [style.prompt(q.question) for q in questions],
            "question_id": ids,
            "domain": [q.domain for q in questions],
        }
    )


def build_grpo_trainer(
    model_dir: str | Path,
    questions: Sequence[Question],
    reward_fn: RewardFn,
    settings: GRPOSettings,
    output_dir: str | Path,
) -> Any:
    """A ``trl.GRPOTrainer`` for the model in `model_dir` on `questions`, rewarded by `reward_fn`.

    `reward_fn` goes to TRL unchanged (sync or ``async def``). TRL calls it with the keyword
    arguments ``prompts``, ``completions``, ``completion_ids``, ``question_id``, ``domain`` (one
    entry per completion), ``trainer_state``, ``log_extra`` and ``log_metric``; it returns one float
    or None per completion. `group_by_question` on ``question_id`` finds each question's group.
    TRL names the reward after ``reward_fn.__name__`` (or its class name) in its logs.

    To see the advantages TRL used, pass ``extra={"log_completions": True}``: after each logged
    step, ``output_dir/completions/completions_<step:05d>.parquet`` holds one row per completion of
    that step's reward call, in call order, with the columns ``step``, ``prompt``, ``completion``,
    one per reward function, any ``log_extra`` columns, and ``advantage``.

    With ``settings.overlap_rewards`` the trainer is `training.overlap.OverlappedGRPOTrainer` and
    `reward_fn` must be deferred (``FederatedReward(deferred=True)``); unsupported GRPOConfig
    settings are a `ConfigError` before any model is loaded.
    """
    from trl import GRPOConfig, GRPOTrainer

    from fedgrpo.models.load import load_model

    if len(questions) < settings.prompts_per_step:
        raise ConfigError(
            f"{len(questions)} training questions cannot fill one step of prompts_per_step="
            f"{settings.prompts_per_step} (TRL drops incomplete batches); add questions or lower "
            "prompts_per_step"
        )
    dataset = build_grpo_dataset(questions, settings.style)
    args = GRPOConfig(**grpo_config_kwargs(settings, output_dir))
    trainer_kwargs: dict[str, Any] = {}
    trainer_class = GRPOTrainer
    if settings.overlap_rewards:
        from fedgrpo.training.overlap import OverlappedGRPOTrainer, check_overlap_args

        check_overlap_args(args, reward_fn)
        trainer_class, trainer_kwargs = OverlappedGRPOTrainer, {"deferred_reward": reward_fn}
    model, tokenizer = load_model(model_dir)
    return trainer_class(
        model=model,
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=settings.peft_config(),
        **trainer_kwargs,
    )


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* ``checkpoint-<step>`` directory in `output_dir`, or None.

    transformers writes a checkpoint's files one by one and its ``trainer_state.json`` last, not
    atomically: a process killed while saving leaves a directory without it, or with it cut short.
    Such a directory is never taken for a checkpoint."""
    import json
    import re

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = sorted(((int(m.group(1)), p) for p in output_dir.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))), reverse=True)
    for _, path in steps:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue  # cut short by a kill: an older checkpoint is the newest complete one
        return path
    return None


def checkpoint_step(checkpoint: Path | None) -> int:
    """The optimizer step a checkpoint directory was saved at (0 without one)."""
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0


def train_grpo(trainer: Any, resume: bool) -> Any:
    """Run ``trainer.train()``; with `resume`, continue from the last checkpoint in its output_dir.

    A resumed run restores model, optimizer, scheduler, RNG and step count
    (``resume_from_checkpoint`` semantics), draws the questions an uninterrupted run would have
    drawn (`ResumeSampler`), and trains only the steps left up to ``max_steps``. Without a checkpoint
    it starts fresh. A checkpoint already at ``max_steps`` is a finished run: it is loaded and nothing
    is trained (`restore_finished`). Returns the ``transformers.trainer_utils.TrainOutput``, or None for
    a finished run.
    """
    checkpoint = last_checkpoint(trainer.args.output_dir) if resume else None
    if checkpoint and checkpoint_step(checkpoint) >= trainer.args.max_steps:
        return restore_finished(trainer, checkpoint)
    if checkpoint:
        trainer.add_callback(resume_sampler_callback())
    return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def restore_finished(trainer: Any, checkpoint: Path) -> None:
    """Load a finished run's last checkpoint (at max_steps) into `trainer` without training.

    transformers resumes a checkpoint that ends mid-epoch by entering that epoch, and checks the step
    count only after a step: rerunning a finished run through ``train()`` would train one step more
    than asked (a rerun of a 600-step run ended at checkpoint-601 with other numbers). The weights
    and the state (log history, step) of the checkpoint are the run's result."""
    from safetensors.torch import load_file
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "peft_config"):  # a LoRA policy: its checkpoint holds the adapter
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
        return None
    missing, unexpected = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    # A tied output layer is saved once, as the input embeddings; anything else missing is a broken file.
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"{checkpoint} does not fit the policy: missing {sorted(set(missing) - tied)}, "
                           f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    return None


def find_sampler_generator(dataloader: Any) -> Any:
    """The torch.Generator of the training sampler behind `dataloader` (TRL's ``RepeatSampler``
    shuffles with its own generator, seeded once), through accelerate's wrappers; None if absent."""
    seen: set[int] = set()
    todo = [dataloader]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        generator = getattr(node, "generator", None)
        if generator is not None and type(generator).__name__ == "Generator" and hasattr(node, "__iter__") \
                and node is not dataloader:
            return node
        todo += [getattr(node, name, None) for name in ("sampler", "batch_sampler", "base_dataloader")]
    return None


def resume_sampler_callback() -> Any:
    """A callback that replays the sampler's shuffles of the epochs a resumed run has finished.

    Why: transformers restores the global RNG and skips the batches already trained in the current
    epoch, but TRL's ``RepeatSampler`` draws each epoch's order from its *own* generator, seeded once
    when the trainer is built; a resumed run's fresh generator would give epoch k the order of epoch
    0 (measured: a 40-step run killed at step 20, 10 steps per epoch, trained on other questions
    from step 21 on). Iterating the sampler once per finished epoch, before training starts, moves
    its generator to where the uninterrupted run's was. `tests/unit/test_trl_guard.py` pins that one
    iteration is one shuffle."""
    from transformers import TrainerCallback

    class ResumeSampler(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None,
                           **kwargs: Any) -> None:
            sampler = find_sampler_generator(train_dataloader)
            if sampler is None or not state.global_step:
                return
            steps_per_epoch = max(1, len(train_dataloader) // max(1, args.gradient_accumulation_steps))
            for _ in range(state.global_step // steps_per_epoch):
                for _ in sampler:  # one epoch's draws, as the uninterrupted run made them
                    pass

    return ResumeSampler()


class GroupLayoutError(RuntimeError):
    """A reward call whose completions are not contiguous per-question groups (a bug)."""


def group_by_question(question_ids: Sequence[str], num_generations: int) -> list[tuple[str, slice]]:
    """Split one reward call's completions into per-question groups, checking TRL's layout.

    TRL repeats each prompt `num_generations` times consecutively, so completion i belongs to group
    ``i // num_generations``. This returns each group's question id and slice, in call order, and
    raises `GroupLayoutError` when a block mixes questions or a question appears in two blocks (for
    example under multi-process training, where a group may span processes).

    >>> group_by_question(["a", "a", "b", "b"], 2)
    [('a', slice(0, 2, None)), ('b', slice(2, 4, None))]
    """
    n = len(question_ids)
    if num_generations < 1 or n % num_generations != 0:
        raise GroupLayoutError(
            f"a reward call has {n} completions, not a multiple of "
            f"num_generations={num_generations}"
        )
    groups: list[tuple[str, slice]] = []
    seen: set[str] = set()
    for start in range(0, n, num_generations):
        block = question_ids[start : start + num_generations]
        qid = block[0]
        if any(other != qid for other in block):
            raise GroupLayoutError(
                f"completions [{start}, {start + num_generations}) of a reward call mix questions "
                f"{sorted(set(block))}; expected num_generations={num_generations} consecutive "
                "completions per question (single-process TRL with RepeatSampler)"
            )
        if qid in seen:
            raise GroupLayoutError(
                f"question {qid!r} has more than one group of {num_generations} completions in one "
                "reward call"
            )
        seen.add(qid)
        groups.append((qid, slice(start, start + num_generations)))
    return groups
