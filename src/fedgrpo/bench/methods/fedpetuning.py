"""FedPETuning (Zhang et al., ACL Findings 2023): a LoRA adapter of the server trained on the clients'
labelled data and averaged with Flower's FedAvg every round (client computations:
`baselines.fedpetuning`; the round loop: `engines.fedavg`), objective SFT or GRPO on the clients'
own labels."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from fedgrpo.bench.methods.base import Method, MethodResult
from fedgrpo.config import FedGRPOConfig
from fedgrpo.progress import ProgressSink


def run(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink) -> MethodResult:
    from fedgrpo.baselines.fedpetuning import initial_adapter, local_steps, merge_adapter
    from fedgrpo.engines.fedavg import Checkpoints, run_fedavg_embedded, run_fedavg_simulation

    b = config.baselines
    initial = initial_adapter(config, prepared.server_dir)
    if config.engine.engine == "simulation":
        state, log = run_fedavg_simulation(config, initial, b.fedpetuning_rounds,
                                           functools.partial(_simulated_client_update, method.objective))
    else:
        shards = prepared.splits.clients

        def update(arrays: Any, r: int, c: int) -> Any:
            from fedgrpo.baselines.fedpetuning import local_update

            return local_update(config, prepared.server_dir, arrays, shards[c].questions, method.objective, r, c,
                                out / "local" / f"client-{c}")

        state, log = run_fedavg_embedded(initial, len(shards), b.fedpetuning_rounds, update,
                                         Checkpoints(out / "fedavg"), progress, f"{method.label} rounds")
    final_dir = merge_adapter(config, prepared.server_dir, state, out / "final-model")
    messages = fedavg_messages(log)
    key = "reward" if method.objective == "grpo" else "loss"
    curve = [{"step": m["round"], key: m.get(key)} for m in log.round_metrics]
    facts = {"rounds": b.fedpetuning_rounds, "lora_rank": b.fedpetuning_lora_rank,
             "adapter_parameters": sum(int(v.size) for v in initial.values()), "engine": config.engine.engine,
             "local_grpo_steps": local_steps(config) if method.objective == "grpo" else None}
    return MethodResult(final_dir, messages, curve, facts)


def fedavg_messages(log: Any) -> list[list[Any]]:
    """A FedAvg run's messages (`engines.fedavg.FedAvgLog`) as ``[phase, round, client, direction,
    bytes, wire bytes]``."""
    return [["fedavg", r, f"client-{c}", direction, size, wire] for r, c, direction, size, wire in log.messages]


def _simulated_client_update(objective: str, config: FedGRPOConfig, arrays: Any, r: int, c: int) -> Any:
    """A simulated SuperNode's local update: it rebuilds its own shard and finds the cached base."""
    from fedgrpo.baselines.fedpetuning import local_update

    prepared = _prepared_server(config)
    with tempfile.TemporaryDirectory() as work:
        return local_update(config, prepared.server_dir, arrays, prepared.splits.clients[c].questions, objective, r, c,
                            Path(work))


@functools.lru_cache(maxsize=2)
def _prepared_server(config: FedGRPOConfig) -> Any:
    """A simulated SuperNode's splits and cached base, built once per process (Ray keeps its actors
    alive across rounds), not once per round."""
    from fedgrpo.training.prepare import prepare

    return prepare(config, experts=False)


KNOBS = ("fedpetuning_rounds", "fedpetuning_local_epochs", "fedpetuning_batch_size", "fedpetuning_learning_rate",
         "fedpetuning_lora_rank", "fedpetuning_lora_alpha")
SFT = Method("fedpetuning_sft", "FedPETuning+SFT", run, objective="sft", answers="the clients", role="baseline",
             kind="fedpetuning", byte_ratio_goal=100, knobs=KNOBS,
             about="LoRA adapter trained on each client's labelled data, FedAvg every round")
GRPO = Method("fedpetuning_grpo", "FedPETuning+GRPO", run, objective="grpo", answers="the clients", role="baseline",
              kind="fedpetuning", byte_ratio_goal=100, knobs=KNOBS,
              about="LoRA adapter trained by GRPO on each client's own labels, FedAvg every round")
