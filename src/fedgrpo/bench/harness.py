"""`fedgrpo bench`: every method over seeds on one config, resumable, summarised against the goals.

Each (method, seed) runs in ``<work>/<method>/seed<s>`` and leaves ``result.json`` (written
atomically) when done; a rerun with the same work directory skips finished ones and resumes an
unfinished one from its own checkpoints. The work directory is keyed by the resolved config, so a
changed default never resumes stale runs. Seeds are pipeline seeds: each sets ``model_seed`` (the
base's initialisation and pre-training order, every expert), ``train_seed`` (GRPO sampling and data
order, LoRA initialisation, Private Evolution's draws) and ``selection_seed`` at once; the data splits
(and so the test set) are the same for every seed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fedgrpo.bench.methods import METHODS, Method, accuracy_curve, method_config, run_method
from fedgrpo.bench.methods.fedgrpo import run as run_fedgrpo
from fedgrpo.config import FedGRPOConfig, build_config
from fedgrpo.core.costs import Schedule, paper_scale_table, schedule_from_shape
from fedgrpo.durable import write_json_atomic
from fedgrpo.errors import ConfigError
from fedgrpo.progress import NullProgress, ProgressSink

# --quick: the same data and models (the model cache is shared), a sixth of the training.
QUICK = {"train_steps": 100, "fedpetuning_rounds": 5, "dpsda_rounds": 3}
QUICK_SEEDS = (0,)
FULL_SEEDS = (0, 1, 2)


# Ablations the paper reports (M, number of clients: Fig. 3a) or that decide the graph (L, encoder).
ABLATION_KEYS = ("experts_per_question", "num_clients", "clients", "neighbours", "encoder", "competence_threshold",
                 "selection")


def ablation_overrides(config: FedGRPOConfig, key: str, value: str) -> dict[str, Any]:
    """The config values of one ablation point. ``clients=K`` is the paper's Fig. 3a: the same private
    data shared by K clients (num_clients = K, client_size = the default total / K), so a point changes
    how the data is split, not how much there is; every other key is that config key itself."""
    if key == "clients":
        k = int(value)
        if k < 1:
            raise ConfigError(f"--ablation clients takes numbers of clients (at least 1), got {value}")
        total = config.data.client_size * config.data.clients
        return {"num_clients": k, "client_size": max(1, round(total / k))}
    return {key: value}


@dataclass(frozen=True)
class BenchPlan:
    config: FedGRPOConfig
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    work: Path
    quick: bool
    ablations: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # key -> values


def plan(config: FedGRPOConfig, methods: Sequence[str] | None, seeds: Sequence[int] | None, quick: bool,
         work_root: Path, ablations: Sequence[str] = ()) -> BenchPlan:
    """What to run: the methods (default all, or none when only ablations are asked for), seeds, the
    work directory keyed by the resolved config, and each ablation (``KEY=V1,V2,...``) as FedGRPO (no
    answers) at each value."""
    parsed = parse_ablations(ablations)
    # Ablations alone still run (or read back) Central-GRPO and FedGRPO at the defaults: each table's
    # reference row and its share of Central-GRPO's gain.
    names = list(methods or (["central_grpo", "fedgrpo"] if parsed else
                             [m.name for m in METHODS.values() if m.in_default_plan]))
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}: use any of {', '.join(METHODS)}")
    if quick:
        config = build_config(cli_values={**config.to_flat(), **QUICK})
    chosen = [METHODS[m] for m in names]
    baselines = [m.name for m in chosen if m.kind in ("fedpetuning", "dpsda")]
    if config.engine.engine == "deployment" and baselines:
        raise ConfigError(f"{', '.join(baselines)} run on the embedded and simulation engines only (no Flower "
                          "Deployment App for them yet); drop --engine deployment or pick FedGRPO's methods "
                          "with --methods")
    for key, values in parsed.items():
        for value in values:
            variant = Method(f"ablation-{key}={value}", f"FedGRPO, {key}={value}", run_fedgrpo,
                             ablation_overrides(config, key, value), about=f"FedGRPO (no answers) with {key}={value}")
            method_config(config, variant)  # a value the config refuses fails now, not hours later
            chosen.append(variant)
    resolved = json.dumps({k: str(v) for k, v in config.to_flat().items() if k != "output_dir"}, sort_keys=True)
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:10]
    return BenchPlan(config, tuple(chosen), tuple(seeds or (QUICK_SEEDS if quick else FULL_SEEDS)),
                     work_root / digest, quick, parsed)


def parse_ablations(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        items = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or key not in ABLATION_KEYS or not items:
            raise ConfigError(f"--ablation takes KEY=V1,V2,... with KEY one of {', '.join(ABLATION_KEYS)}; got {spec!r}")
        out[key] = items
    return out


def run_bench(p: BenchPlan, progress: ProgressSink = NullProgress()) -> dict[str, Any]:
    """Every (method, seed) of the plan, finished ones read back; the summary and every result."""
    results: dict[str, list[dict[str, Any]]] = {m.name: [] for m in p.methods}
    labels = {m.name: m for m in p.methods}
    for seed in p.seeds:
        seeded = pipeline_seeded(p.config, seed)
        for method in p.methods:
            out = p.work / method.name / f"seed{seed}"
            done = out / "result.json"
            if done.is_file():
                result = json.loads(done.read_text())
                progress.log(f"{method.label}, seed {seed}: finished earlier")
            else:
                progress.log(f"{method.label}, seed {seed}")
                result = run_method(seeded, method, out, progress) | {"seed": seed}
            if "accuracy_curve" not in result:  # also for results of a version that made none
                result["accuracy_curve"] = accuracy_curve(method_config(seeded, method), out,
                                                          _eval_sets(p.config), progress)
                write_json_atomic(done, result, indent=None)
            results[method.name].append(result)
    paper_scale = paper_scale_table(schedule=measured_schedule(results.get("fedgrpo", [])))
    return {"summary": summarise(results), "goals": goals(results, paper_scale), "runs": results,
            "paper_scale_bytes": paper_scale,
            "quick": p.quick, "seeds": list(p.seeds),
            "ablations": {key: {v: f"ablation-{key}={v}" for v in values} for key, values in p.ablations.items()},
            "about": {name: m.about for name, m in labels.items()}}


def measured_schedule(runs: list[dict[str, Any]]) -> Schedule:
    """The closed forms' schedule from FedGRPO's runs (their scoring messages' shape, summed over
    seeds; `core.costs.schedule_from_shape`); the documented defaults where no run recorded one."""
    total: dict[str, dict[str, float]] = {}
    for run in runs:
        for form, counts in ((run.get("facts") or {}).get("scoring_shape") or {}).items():
            for key, value in counts.items():
                total.setdefault(form, {})[key] = total.get(form, {}).get(key, 0) + value
    return schedule_from_shape(total)


def pipeline_seeded(config: FedGRPOConfig, seed: int) -> FedGRPOConfig:
    """`config` at pipeline seed `seed`: every seed of the run at once (the data splits stay put)."""
    return build_config(cli_values={**config.to_flat(), "model_seed": seed, "train_seed": seed,
                                    "selection_seed": seed})


@functools.lru_cache(maxsize=2)
def _eval_sets_cached(data: Any) -> Any:
    from fedgrpo.data.partition import build_splits

    return build_splits(data).eval


def _eval_sets(config: FedGRPOConfig) -> Any:
    return _eval_sets_cached(config.data)


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per method: accuracy per domain and on the mean (points, mean and std over seeds), the gain
    over the base, bytes both ways, wall time, and the share of Central-GRPO's gain."""
    out: dict[str, Any] = {}
    for name, runs in results.items():
        if not runs:
            continue
        domains = list(runs[0]["after"])
        out[name] = {
            "label": runs[0]["label"],
            "per_domain": {d: _stats([100 * r["after"][d] for r in runs]) for d in domains},
            "mean": _stats([100 * r["mean_after"] for r in runs]),
            "gain": _stats([100 * (r["mean_after"] - r["mean_before"]) for r in runs]),
            "routing_hit_rate": (statistics.fmean(r["facts"]["routing_hit_rate"] for r in runs)
                                 if all(r.get("facts", {}).get("routing_hit_rate") is not None for r in runs) else None),
            "validation_gain": _stats([100 * (r["validation"]["mean_after"] - r["validation"]["mean_before"])
                                       for r in runs]) if all(r.get("validation", {}).get("mean_before") is not None
                                                              for r in runs) else None,
            "bytes": {k: statistics.fmean(r["bytes"][k] for r in runs) for k in ("down", "up", "total")},
            # The same messages serialized as they travel (None for results made before it was recorded).
            "wire_bytes": ({k: statistics.fmean(r["wire_bytes"][k] for r in runs) for k in ("down", "up", "total")}
                           if all(r.get("wire_bytes") and not r["wire_bytes"].get("unrecorded") for r in runs)
                           else None),
            "wall_time_s": statistics.fmean(r["wall_time_s"] for r in runs),
            "seeds": [r["seed"] for r in runs],
        }
    central = out.get("central_grpo", {}).get("gain", {}).get("mean")
    for s in out.values():
        s["share_of_central_gain"] = s["gain"]["mean"] / central if central else None
    return out


def goals(results: dict[str, list[dict[str, Any]]],
          paper_scale: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The goals the registry's rows state, each measured: (goal, measured, met); a goal whose methods
    did not run is absent."""
    s = summarise(results)
    found: list[dict[str, Any]] = []

    def add(goal: str, measured: str, met: bool) -> None:
        found.append({"goal": goal, "measured": measured, "met": bool(met)})

    reference = next((m.name for m in METHODS.values() if m.role == "reference" and m.name in s), None)
    for name, method in METHODS.items():
        if name in s and method.share_goal is not None and reference and s[reference]["gain"]["mean"] > 0:
            share = s[name]["share_of_central_gain"]
            add(f"{method.label} recovers >= {100 * method.share_goal:.0f}% of {METHODS[reference].label}'s gain",
                f"{100 * share:.0f}%", share >= method.share_goal)
    if "fedgrpo" in s and "fedgrpo_random" in s:
        diff = s["fedgrpo"]["mean"]["mean"] - s["fedgrpo_random"]["mean"]["mean"]
        spread = max(s["fedgrpo"]["mean"]["std"], s["fedgrpo_random"]["mean"]["std"])
        add("the confidence graph beats random selection by more than the seed spread",
            f"{diff:+.1f} points (spread {spread:.1f})", diff > spread and diff > 0)
    fed = (s.get("fedgrpo", {}).get("wire_bytes") or {}).get("total")
    for name, method in METHODS.items():
        if name not in s or method.role != "baseline":
            continue
        theirs = (s[name].get("wire_bytes") or {}).get("total")
        if fed and theirs and method.byte_ratio_goal:
            measured = theirs / fed
            add(f"FedGRPO's wire bytes <= 1/{method.byte_ratio_goal:g} of {method.label}'s at laptop scale (as measured)",
                f"1/{measured:.1f}", measured >= method.byte_ratio_goal)
        if "fedgrpo" in s:
            diff = s["fedgrpo"]["mean"]["mean"] - s[name]["mean"]["mean"]
            add(f"FedGRPO beats {method.label} on mean accuracy", f"{diff:+.1f} points", diff > 0)
    for goal, key, ratio in (("FedPETuning", "fedpetuning", 100), ("DPSDA-FL", "dpsda", 10)):
        rows = paper_scale
        if rows:
            worst = max(r["fedgrpo_range"]["answers"]["high"] / r[key] for r in rows.values())
            add(f"FedGRPO (answer-matching scorers) <= 1/{ratio} of {goal}'s bytes at the paper's scale over the "
                "closed form's whole range", f"1/{1 / worst:,.0f} at worst", worst <= 1 / ratio)
    return found


def environment() -> dict[str, Any]:
    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:  # noqa: BLE001 - a package may be absent
            return "absent"

    try:
        git = ["git", "-C", str(Path(__file__).resolve().parent)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
        dirty = bool(subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=False).stdout.strip())
    except OSError:
        commit, dirty = "unknown", True
    import torch

    return {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "machine_label": f"{os.cpu_count()} cores, {_cpu_model()}, {platform.machine()}",
            "torch_threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu",
            **{name: v(name) for name in ("fedgrpo", "torch", "transformers", "trl", "peft", "flwr", "reasoning-gym",
                                          "dp-accounting")},
            "commit": commit or "unknown", "dirty": dirty}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_bench(report: dict[str, Any], p: BenchPlan, results_dir: Path) -> tuple[Path, Path]:
    """``bench-<time>.json`` (config, environment, metrics) and ``bench-<time>.md`` with its plots."""
    from fedgrpo.bench.report import write_markdown

    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"bench{'-quick' if p.quick else ''}-{datetime.now():%Y%m%d-%H%M%S}"
    payload = {"name": "bench", "created": datetime.now().isoformat(timespec="seconds"), "env": environment(),
               "config": p.config.to_flat(), "methods": [m.name for m in p.methods], "work": str(p.work),
               "metrics": report}
    json_path = results_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(payload, indent=1))
    md_path = write_markdown(payload, results_dir / f"{stamp}.md", p)
    return json_path, md_path
