"""Every method of the comparison, run on one config: what it is, how it runs, what it reports.

A method's result (`run_method`) is one JSON-able dict: held-out greedy pass@1 per domain after it
ran (and of the base before), every message it exchanged as ``[phase, round or step, client,
direction, bytes]`` (bytes = `core.comm`'s byte model for FedGRPO's and DPSDA-FL's messages,
Flower's ``count_bytes`` of the records for FedPETuning's adapters), its training curve, its wall
time and its method-specific facts (epsilon spent, rounds, routing hit rate).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig, build_config
from fedgrpo.core.comm import payload_bytes
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.durable import write_json_atomic
from fedgrpo.progress import NullProgress, ProgressSink


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # as the report's tables name it
    kind: str  # zero_shot | fedgrpo | fedpetuning | dpsda
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    objective: str = ""  # sft | grpo for the baselines
    answers: str = "none"  # who sees answers: none | clients (answer-based experts) | server | clients (labels)
    about: str = ""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zero_shot", "Zero-shot", "zero_shot", about="the untouched server model"),
    Method("central_grpo", "Central-GRPO", "fedgrpo", {"use_ground_truth": True}, answers="server",
           about="GRPO with every gold answer of the training questions at the server (upper bound)"),
    Method("fedgrpo", "FedGRPO (no answers)", "fedgrpo", {},
           about="confidence-graph selection, model-based expert rewards (the paper's Table 2)"),
    Method("fedgrpo_answers", "FedGRPO (answer-based)", "fedgrpo",
           {"pool_answers_at_clients": True, "scorer_mode": "gated"}, answers="clients",
           about="clients hold the training questions of their domain with answers (the paper's Table 1)"),
    Method("fedgrpo_random", "FedGRPO, random experts", "fedgrpo", {"selection": "random"},
           about="M experts drawn at random per question (the official code)"),
    Method("fedgrpo_oracle", "FedGRPO, domain oracle", "fedgrpo", {"selection": "oracle"},
           about="the question's own domain expert first (the official code's no-answer mode)"),
    Method("fedpetuning_sft", "FedPETuning+SFT", "fedpetuning", objective="sft", answers="clients",
           about="LoRA adapter trained on each client's labelled data, FedAvg every round"),
    Method("fedpetuning_grpo", "FedPETuning+GRPO", "fedpetuning", objective="grpo", answers="clients",
           about="LoRA adapter trained by GRPO on each client's own labels, FedAvg every round"),
    Method("dpsda_sft", "DPSDA-FL+SFT", "dpsda", objective="sft", answers="clients",
           about="clients send DP synthetic sets (Private Evolution); the server fine-tunes on them"),
    Method("dpsda_grpo", "DPSDA-FL+GRPO", "dpsda", objective="grpo", answers="clients",
           about="clients send DP synthetic sets (Private Evolution); the server runs GRPO on their answers"),
)}


def method_config(config: FedGRPOConfig, method: Method) -> FedGRPOConfig:
    """`config` with the method's overrides (and its output directory left to the caller)."""
    if not method.overrides:
        return config
    return build_config(cli_values={**config.to_flat(), **method.overrides})


def run_method(config: FedGRPOConfig, method: Method, out: Path, progress: ProgressSink = NullProgress()) -> dict[str, Any]:
    """Run one method on `config` in `out` (resumable where the method trains); its result dict."""
    from fedgrpo.training.evaluate import evaluate_greedy
    from fedgrpo.training.prepare import prepare

    started = time.perf_counter()
    config = method_config(config, method)
    out.mkdir(parents=True, exist_ok=True)
    style = PromptStyle.from_config(config.prompts)
    prepared = prepare(config, progress, experts=method.kind == "fedgrpo" and not config.data.use_ground_truth)
    before = evaluate_greedy(prepared.server_dir, prepared.splits.eval, config.evaluation, style, progress,
                             "evaluate the base server (greedy)", cache=out / "before.json")
    runner = {"zero_shot": _zero_shot, "fedgrpo": _fedgrpo, "fedpetuning": _fedpetuning, "dpsda": _dpsda}[method.kind]
    final_dir, messages, curve, facts = runner(config, method, prepared, out, progress)
    after = before if final_dir is None else evaluate_greedy(
        final_dir, prepared.splits.eval, config.evaluation, style, progress, f"evaluate {method.label} (greedy)",
        cache=out / "after.json")
    down = sum(m[4] for m in messages if m[3] == "down")
    up = sum(m[4] for m in messages if m[3] == "up")
    return {
        "method": method.name, "label": method.label, "kind": method.kind,
        "before": {d: s.pass_at_1 for d, s in before.items()},
        "after": {d: s.pass_at_1 for d, s in after.items()},
        "mean_before": _mean(before), "mean_after": _mean(after),
        "bytes": {"down": down, "up": up, "total": down + up},
        "messages": messages, "curve": curve, "facts": facts,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


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


# --- the runners: (final model dir or None, messages, curve, facts) ---------------------------------------

def _zero_shot(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink):
    return None, [], [], {}


def _fedgrpo(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink):
    from fedgrpo.engines.switch import run_engine

    metrics = run_engine(config, out, progress)
    # The run evaluated its final model already: its scores become the method's (no second pass).
    (out / "after.json").write_text(json.dumps(metrics["accuracy_after"]))
    traffic = out / "traffic.jsonl"
    messages = []
    if traffic.is_file():  # the run's ledger: every message, both ways (ground truth has none)
        for line in traffic.read_text().splitlines():
            phase, step, expert, direction, size = json.loads(line)
            messages.append([phase, step, expert, direction, size])
    facts = {"routing_hit_rate": (metrics.get("routing") or {}).get("hit_rate"),
             "failures": metrics.get("failures", {}), "engine": config.engine.engine}
    return Path(metrics["final_model"]), messages, metrics["reward_curve"], facts


def _fedpetuning(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink):
    from fedgrpo.baselines.fedpetuning import initial_adapter, local_steps, merge_adapter
    from fedgrpo.engines.fedavg import Checkpoints, run_fedavg_embedded, run_fedavg_simulation

    b = config.baselines
    initial = initial_adapter(config, prepared.server_dir)
    if config.engine.engine == "simulation":
        state, log = run_fedavg_simulation(config, initial, b.fedpetuning_rounds,
                                           _simulated_update(method.objective))
    else:
        shards = prepared.splits.clients

        def update(arrays, r, c):
            from fedgrpo.baselines.fedpetuning import local_update

            return local_update(config, prepared.server_dir, arrays, shards[c].questions, method.objective, r, c,
                                out / "local" / f"client-{c}")

        state, log = run_fedavg_embedded(initial, len(shards), b.fedpetuning_rounds, update,
                                         Checkpoints(out / "fedavg"), progress, f"{method.label} rounds")
    final_dir = merge_adapter(config, prepared.server_dir, state, out / "final-model")
    messages = [["fedavg", r, f"client-{c}", direction, size] for r, c, direction, size in log.messages]
    key = "reward" if method.objective == "grpo" else "loss"
    curve = [{"step": m["round"], key: m.get(key)} for m in log.round_metrics]
    adapter_params = sum(int(v.size) for v in initial.values())
    facts = {"rounds": b.fedpetuning_rounds, "lora_rank": b.fedpetuning_lora_rank,
             "adapter_parameters": adapter_params, "engine": config.engine.engine,
             "local_grpo_steps": local_steps(config) if method.objective == "grpo" else None}
    return final_dir, messages, curve, facts


def _simulated_update(objective: str):
    return functools.partial(_simulated_client_update, objective)


def _simulated_client_update(objective: str, config: FedGRPOConfig, arrays: Any, r: int, c: int):
    """A simulated SuperNode's local update: it rebuilds its own shard and finds the cached base."""
    import tempfile

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


def _dpsda(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink):
    from fedgrpo.baselines.dpsda import Generator, pooled_for_grpo, private_evolution

    b = config.baselines
    pe_file = out / "private-evolution.json"
    splits = prepared.splits
    if pe_file.is_file():
        pe = json.loads(pe_file.read_text())
        ids = {q.question_id: q for q in splits.public}
        synthetic = [ids[i] for i in pe["synthetic_ids"]]
    else:
        generator = Generator(splits.public)
        runs = []
        with progress.phase("Private Evolution on every client", len(splits.clients)) as advance:
            for index, shard in enumerate(splits.clients):
                runs.append(private_evolution(config, shard.expert_id, shard.questions, generator,
                                              seed=config.train.train_seed * 1_000 + index))
                advance(1)
        synthetic = [q for r in runs for q in r.synthetic]
        pe = {"synthetic_ids": [q.question_id for q in synthetic],
              "messages": [["pe", rnd, r.expert_id, direction, payload_bytes(payload)]
                           for r in runs for rnd, direction, payload in r.messages],
              "epsilon": {r.expert_id: r.epsilon for r in runs}, "delta": {r.expert_id: r.delta for r in runs},
              "noise_multiplier": {r.expert_id: r.noise_multiplier for r in runs},
              "kept_per_round": {r.expert_id: r.kept_per_round for r in runs},
              "synthetic_domains": _counts(q.domain for q in synthetic)}
        write_json_atomic(pe_file, pe, indent=None)
    facts = {k: pe[k] for k in ("epsilon", "delta", "noise_multiplier", "kept_per_round", "synthetic_domains")}
    facts |= {"rounds": b.dpsda_rounds, "candidates": b.dpsda_candidates, "synthetic_per_client": b.dpsda_synthetic_size}
    if method.objective == "sft":
        final_dir, curve = _server_sft(config, prepared, synthetic, out, progress)
    else:
        grpo_config = build_config(cli_values={**config.to_flat(), "use_ground_truth": True})
        pool = pooled_for_grpo(synthetic)
        tuned = dataclasses.replace(prepared, config=grpo_config, splits=dataclasses.replace(splits, pool=pool))
        from fedgrpo.training.policy import train_policy

        trained = train_policy(tuned, out, progress)
        final_dir, curve = trained.final_dir, trained.reward_curve
        facts["grpo_questions"] = len(pool)
    return final_dir, pe["messages"], curve, facts


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _server_sft(config: FedGRPOConfig, prepared: Any, synthetic: list[Any], out: Path,
                progress: ProgressSink) -> tuple[Path, list[dict[str, Any]]]:
    """The server fine-tunes on the pooled synthetic set (its SFT recipe: the experts' one)."""
    final_dir = out / "final-model"
    curve_file = out / "sft-curve.json"
    if (final_dir / "config.json").is_file() and curve_file.is_file():
        return final_dir, json.loads(curve_file.read_text())
    from fedgrpo.models.load import load_model, supervised_pairs
    from fedgrpo.models.pretrain import train_supervised

    models = config.models
    model, tokenizer = load_model(prepared.server_dir)
    pairs = supervised_pairs(synthetic, PromptStyle.from_config(config.prompts))
    steps = config.baselines.dpsda_sft_epochs * math.ceil(len(pairs) / models.sft_batch_size)
    with progress.phase(f"server SFT on the synthetic set ({steps} steps)", steps) as advance:
        losses = train_supervised(model, tokenizer, pairs, steps=steps, batch_size=models.sft_batch_size,
                                  learning_rate=models.sft_learning_rate, seed=config.train.train_seed,
                                  on_step=lambda step, loss: advance(1))
    model.save_pretrained(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    curve = [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses) if (i + 1) % 10 == 0 or i + 1 == len(losses)]
    curve_file.write_text(json.dumps(curve))
    return final_dir, curve
