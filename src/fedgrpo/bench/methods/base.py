"""What every method of the comparison shares: its row (`Method`), what its runner hands back
(`MethodResult`), and the one place that runs it (`run_method`).

A method's result is one JSON-able dict: greedy pass@1 per domain after it ran (and of the base
before) on the test split and on the validation split, every message it exchanged as ``[phase,
round or step, client, direction, bytes, wire bytes]``, its training curve, its wall time and its
method-specific facts (epsilon spent, rounds, routing hit rate). Two counts per message, for every
method: ``bytes`` is the payload model (`core.comm`'s byte model for FedGRPO's and DPSDA-FL's
messages, Flower's ``count_bytes`` of the records for FedPETuning's adapters) and ``wire bytes`` the
message serialized as it travels (FedGRPO: its run's ledger, `transport.base.TrafficLedger`, as the
engine sends it; FedPETuning: the Flower message as Flower serializes it, `flower_records.message_bytes`;
DPSDA-FL, whose messages are computed in this process: what each would weigh as a JSON body, the
format of FedGRPO's expert service, `transport.json_body`). The result's ``bytes`` and
``wire_bytes`` are their sums (`byte_totals`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig, build_config
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.progress import NullProgress, ProgressSink


@dataclass(frozen=True)
class MethodResult:
    """What a method's runner hands back: its final model (None: the base itself), every message it
    exchanged as ``[phase, round or step, client, direction, bytes]``, its training curve and its
    method-specific facts (epsilon spent, rounds, routing hit rate...)."""

    final_dir: Path | None
    messages: list[list[Any]] = dataclasses.field(default_factory=list)
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)


Runner = Callable[[FedGRPOConfig, "Method", Any, Path, ProgressSink], MethodResult]


@dataclass(frozen=True)
class Method:
    """One row of the comparison (the registry in `bench.methods`).

    `overrides` are config values the method runs with (a callable gets the bench's config, e.g. to
    take DPSDA-FL's epsilon); `answers` says who sees answers; `role` is ``reference`` (the upper
    bound), ``ours`` (FedGRPO at the defaults), ``variant`` (FedGRPO otherwise) or ``baseline``;
    `share_goal` the share of the reference's gain it should recover, `byte_ratio_goal` how many
    times FedGRPO's bytes this baseline should cost; `knobs` the config keys that are its own (the
    report lists them with their values and how they were chosen)."""

    name: str
    label: str
    runner: Runner
    overrides: Mapping[str, Any] | Callable[[FedGRPOConfig], Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    objective: str = ""  # sft | grpo for the baselines
    answers: str = "nobody"
    role: str = "variant"
    about: str = ""
    share_goal: float | None = None
    byte_ratio_goal: float | None = None
    knobs: tuple[str, ...] = ()
    kind: str = "fedgrpo"  # the family (zero_shot | fedgrpo | fedpetuning | dpsda): what it builds
    in_default_plan: bool = True  # run by `fedgrpo bench` without --methods

    def overrides_for(self, config: FedGRPOConfig) -> dict[str, Any]:
        return dict(self.overrides(config) if callable(self.overrides) else self.overrides)


def method_config(config: FedGRPOConfig, method: Method) -> FedGRPOConfig:
    """`config` with the method's overrides (and its output directory left to the caller)."""
    overrides = method.overrides_for(config)
    if not overrides:
        return config
    return build_config(cli_values={**config.to_flat(), **overrides})


def run_method(config: FedGRPOConfig, method: Method, out: Path, progress: ProgressSink = NullProgress()) -> dict[str, Any]:
    """Run one method on `config` in `out` (resumable where the method trains); its result dict."""
    from fedgrpo.training.evaluate import evaluate_greedy
    from fedgrpo.training.prepare import prepare

    started = time.perf_counter()
    config = method_config(config, method)
    out.mkdir(parents=True, exist_ok=True)
    style = PromptStyle.from_config(config.prompts)
    prepared = prepare(config, progress, experts=method.kind == "fedgrpo" and not config.data.use_ground_truth)
    splits = prepared.splits
    before = evaluate_greedy(prepared.server_dir, splits.eval, config.evaluation, style, progress,
                             "evaluate the base server (greedy)", cache=out / "before.json")
    val_before = evaluate_greedy(prepared.server_dir, splits.val, config.evaluation, style, progress,
                                 "evaluate the base server on validation", cache=out / "before-val.json")
    result = method.runner(config, method, prepared, out, progress)
    after, val_after = before, val_before
    if result.final_dir is not None:
        after = evaluate_greedy(result.final_dir, splits.eval, config.evaluation, style, progress,
                                f"evaluate {method.label} (greedy)", cache=out / "after.json")
        val_after = evaluate_greedy(result.final_dir, splits.val, config.evaluation, style, progress,
                                    f"evaluate {method.label} on validation", cache=out / "after-val.json")
    messages = result.messages
    return {
        "method": method.name, "label": method.label, "kind": method.kind,
        "before": {d: s.pass_at_1 for d, s in before.items()},
        "after": {d: s.pass_at_1 for d, s in after.items()},
        "mean_before": _mean(before), "mean_after": _mean(after),
        "validation": {"before": {d: s.pass_at_1 for d, s in val_before.items()},
                       "after": {d: s.pass_at_1 for d, s in val_after.items()},
                       "mean_before": _mean(val_before) if val_before else None,
                       "mean_after": _mean(val_after) if val_after else None},
        "bytes": byte_totals(messages, 4), "wire_bytes": byte_totals(messages, 5),
        "messages": messages, "curve": result.curve, "facts": result.facts,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def byte_totals(messages: list[list[Any]], column: int) -> dict[str, int]:
    """Down, up and total of one byte column of `messages` (4: payload, 5: wire), and how many
    messages do not hold it (``unrecorded``: a FedGRPO ledger file older than the wire column)."""
    out = {"down": 0, "up": 0, "unrecorded": 0}
    for m in messages:
        size = m[column] if len(m) > column else None
        if size is None:
            out["unrecorded"] += 1
        else:
            out[m[3]] += size
    out["total"] = out["down"] + out["up"]
    return out


def accuracy_curve(config: FedGRPOConfig, out: Path, eval_sets: Mapping[str, Any],
                   progress: ProgressSink = NullProgress()) -> list[dict[str, float]]:
    """Held-out greedy mean pass@1 of every checkpoint a method left in `out` (GRPO: TRL's
    ``checkpoints/checkpoint-<step>``; FedPETuning: the global adapter after each round), each
    evaluation cached in ``out/curve/``; the points in step (or round) order."""
    from fedgrpo.training.evaluate import evaluate_greedy
    from fedgrpo.training.trainer import checkpoint_step

    style = PromptStyle.from_config(config.prompts)
    points: list[tuple[int, Path]] = []
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir():
        points += [(checkpoint_step(p), p) for p in checkpoints.glob("checkpoint-*")
                   if (p / "trainer_state.json").is_file() and (p / "config.json").is_file()]
    rounds = sorted((out / "fedavg").glob("round-*.npz")) if (out / "fedavg").is_dir() else []
    curve_dir = out / "curve"
    curve_dir.mkdir(exist_ok=True)
    for npz in rounds:  # FedPETuning: the base with that round's global adapter merged in
        r = int(npz.stem.split("-")[1])
        model_dir = curve_dir / f"round-{r}-model"
        if not (curve_dir / f"step-{r}.json").is_file() and not (model_dir / "config.json").is_file():
            import numpy as np

            from fedgrpo.baselines.fedpetuning import merge_adapter
            from fedgrpo.training.prepare import prepare

            with np.load(npz) as data:
                merge_adapter(config, prepare(config, experts=False).server_dir, {k: data[k] for k in data.files},
                              model_dir)
        points.append((r, model_dir))
    curve = []
    for step, model_dir in sorted(points):
        scores = evaluate_greedy(model_dir, eval_sets, config.evaluation, style, progress,
                                 f"evaluate checkpoint {step}", cache=curve_dir / f"step-{step}.json")
        curve.append({"step": step, "mean": _mean(scores)})
    return curve


def _mean(scores: Mapping[str, Any]) -> float:
    return sum(s.pass_at_1 for s in scores.values()) / len(scores)


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


