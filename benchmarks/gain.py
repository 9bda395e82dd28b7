"""FedGRPO's accuracy gain without answers against ground-truth GRPO, over seeds, with intervals.

Every run shares the config (steps, candidates per question); per seed the script runs ground-truth
GRPO once and FedGRPO with expert rewards once per variant (a named set of overrides, e.g. a selection
rule), so variants are compared on the same seeds. Two kinds of seed:

- ``--pipeline-seeds S ...`` vary everything that produces a number: ``model_seed`` = S (the base's
  initialisation and pre-training order, every expert's fine-tuning) and ``train_seed`` =
  ``selection_seed`` = S (GRPO's sampling and data order). Each seed builds its own base and experts.
- ``--seeds S ...`` vary ``train_seed`` alone (GRPO), on one base and one set of experts.

``--spread`` adds, beside pipeline seeds P, runs at the first pipeline seed's models with the other
seeds' ``train_seed`` only, so the report says how much of the spread GRPO adds and how much building
the base and experts adds (the variances' difference).

It reports greedy pass@1 gains on the test split per domain and on the mean as mean +- 95% interval
over seeds (Student t), the same on the validation split (where choices are made), the evaluation's
own standard error (binomial, from the test set's size), each variant's gain as a share of ground
truth's, the base's accuracy per seed, wall times, bytes, and the machine.

Finished runs are kept under --work (default runs/gain-work/<digest of the resolved config>, one
directory per mode, its overrides' digest and seed), so a killed benchmark resumes without redoing
them.

Run: .venv/bin/python benchmarks/gain.py [--pipeline-seeds 0 1 2 [--spread] | --seeds 0 1 2]
                                         [--set key=value ...] [--variant NAME:key=value,key=value ...]
                                         [--no-truth] [--reference NAME]
     e.g. --variant paper: --variant threshold:competence_threshold=0.5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from common import write_result

from fedgrpo import load_config
from fedgrpo.engines.run import run

# Student t quantiles for a two-sided 95% interval, by degrees of freedom.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(values: list[float]) -> dict[str, float | None]:
    """Mean and the half-width of its 95% interval over seeds (None with a single seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "ci95": None}
    t = T95.get(len(values) - 1, 1.96)
    return {"mean": mean, "ci95": t * statistics.stdev(values) / math.sqrt(len(values))}


def eval_standard_error(scores: dict[str, dict[str, Any]]) -> float:
    """Binomial standard error (points) of the domain-mean pass@1: sqrt(sum p(1-p)/n) / D."""
    var = sum(s["pass_at_1"] * (1 - s["pass_at_1"]) / s["n"] for s in scores.values())
    return 100 * math.sqrt(var) / len(scores)


def _digest(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def one_run(overrides: dict[str, str], out: Path) -> dict[str, Any]:
    """A run, or its result from an earlier, finished invocation (resume)."""
    result_file = out / "gain-run.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    metrics = run(load_config(overrides=overrides), out).to_dict()
    summary = {
        "overrides": overrides,
        "before": metrics["accuracy_before"],
        "after": metrics["accuracy_after"],
        "gain_points": metrics["gain_points"],
        "validation": metrics.get("validation"),
        "wall_time_s": metrics["wall_time_s"],
        "timings_s": metrics["timings_s"],
        "bytes": metrics["bytes"]["totals"],
        # Payload model and wire per direction, and what the scoring requests held (values, candidates):
        # what benchmarks/communication.py compares with the floor.
        "wire_bytes": metrics["bytes"].get("wire_totals"),
        "scoring_shape": metrics["bytes"].get("scoring_shape"),
        "routing_hit_rate": (metrics["routing"] or {}).get("hit_rate"),
        "routing_table": (metrics["routing"] or {}).get("table"),
        # Issue 13: local DP (epsilon per client, fidelity) and the dishonest-expert re-check.
        "privacy": metrics.get("privacy"),
        "mean_fidelity": (statistics.fmean(f["share"] for f in metrics["reward_fidelity"])
                          if metrics.get("reward_fidelity") else None),
        "expert_checks": metrics.get("expert_checks"),
        "lost_experts": metrics.get("lost_experts"),
    }
    result_file.write_text(json.dumps(summary, indent=2))
    return summary


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Gains per domain and on the mean (test split, and validation where there is one), over the
    seeds of one mode or variant."""
    domains = list(runs[0]["before"])
    per_domain = {d: interval([100 * (r["after"][d]["pass_at_1"] - r["before"][d]["pass_at_1"]) for r in runs])
                  for d in domains}
    val = [(r.get("validation") or {}).get("gain_points") for r in runs]
    return {"gain": interval([r["gain_points"] for r in runs]), "per_domain": per_domain,
            "per_seed": [r["gain_points"] for r in runs],
            "validation_gain": interval(val) if all(v is not None for v in val) else None,
            "validation_per_seed": val,
            "base_mean_per_seed": [round(100 * statistics.fmean(s["pass_at_1"] for s in r["before"].values()), 2)
                                   for r in runs],
            "wall_time_s": interval([r["wall_time_s"] for r in runs]),
            "eval_se_points": eval_standard_error(runs[0]["after"])}


def pipeline_overrides(seed: int) -> dict[str, str]:
    """A pipeline seed: every seed of the run at once (data splits stay put: the test set is fixed)."""
    return {"model_seed": str(seed), "train_seed": str(seed), "selection_seed": str(seed)}


def spread(pipeline: list[dict[str, Any]], grpo_only: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of the gain's spread over pipeline seeds GRPO adds (its variance with the models
    fixed) and how much building the base and the experts adds (the rest of the variance)."""
    total = statistics.variance([r["gain_points"] for r in pipeline])
    grpo = statistics.variance([r["gain_points"] for r in grpo_only])
    return {"total_sd": math.sqrt(total), "grpo_sd": math.sqrt(grpo),
            "models_sd": math.sqrt(max(0.0, total - grpo)),
            "grpo_only_per_seed": [r["gain_points"] for r in grpo_only]}


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    variants = {}
    for spec in specs or ["experts:"]:
        name, _, body = spec.partition(":")
        pairs = [p for p in body.split(",") if p]
        if not name or any("=" not in p for p in pairs):
            raise SystemExit(f"--variant takes NAME:key=value,key=value; got {spec!r}")
        variants[name] = dict(p.split("=", 1) for p in pairs)
    return variants


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--pipeline-seeds", nargs="+", type=int, metavar="SEED",
                      help="seeds that vary everything: model_seed = train_seed = selection_seed = SEED")
    kind.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="train_seed values only (one base)")
    parser.add_argument("--spread", action="store_true",
                        help="with --pipeline-seeds: also vary train_seed alone on the first seed's models, to "
                             "split the spread between GRPO and building the base and experts")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides shared by every run")
    parser.add_argument("--variant", action="append", metavar="NAME:KEY=VALUE,...",
                        help="an expert-reward run with these extra overrides (repeatable; default: one, no extras)")
    parser.add_argument("--no-truth", action="store_true", help="skip the ground-truth runs")
    parser.add_argument("--truth-only", action="store_true",
                        help="only the ground-truth runs (a base recipe's headroom, without experts)")
    parser.add_argument("--work", type=Path, help="where finished runs are kept (resume)")
    parser.add_argument("--reference", metavar="NAME",
                        help="a variant every other one is compared with, seed by seed (paired difference)")
    args = parser.parse_args(argv)
    if any("=" not in a for a in args.set):
        parser.error("--set takes key=value pairs")
    shared = dict(a.split("=", 1) for a in args.set)
    variants = parse_variants(args.variant)
    if args.reference is not None and args.reference not in variants:
        raise SystemExit(f"--reference {args.reference!r} is not a variant: use one of {', '.join(variants)}")
    modes = ({} if args.no_truth else {"ground_truth": {"use_ground_truth": "true"}}) | \
        ({} if args.truth_only else {name: {**extra, "use_ground_truth": "false"} for name, extra in variants.items()})
    # Keyed by the whole resolved config, so a change of the defaults never resumes stale runs.
    resolved = {k: str(v) for k, v in load_config(overrides=shared).to_flat().items()}
    work = args.work or Path(__file__).resolve().parents[1] / "runs" / "gain-work" / _digest(resolved)
    if args.spread and not args.pipeline_seeds:
        parser.error("--spread needs --pipeline-seeds")
    seeds = [(f"p{s}", pipeline_overrides(s)) for s in args.pipeline_seeds] if args.pipeline_seeds else \
        [(f"t{s}", {"train_seed": str(s)}) for s in (args.seeds or [0])]
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for label, seeded in seeds:
        for mode, extra in modes.items():
            overrides = {**shared, **extra, **seeded}
            runs[mode].append(one_run(overrides, work / f"{mode}-{_digest(extra)}-{label}"))
            print(f"seed {label} {mode}: {runs[mode][-1]['gain_points']:+.2f} points "
                  f"({runs[mode][-1]['wall_time_s']} s)", flush=True)
    report = {mode: summarise(rs) for mode, rs in runs.items()}
    if args.spread:
        first = args.pipeline_seeds[0]
        for mode, extra in modes.items():
            grpo_only = [runs[mode][0]] + [
                one_run({**shared, **extra, **pipeline_overrides(first), "train_seed": str(s), "selection_seed": str(s)},
                        work / f"{mode}-{_digest(extra)}-p{first}-t{s}") for s in args.pipeline_seeds[1:]]
            report[mode]["spread"] = spread(runs[mode], grpo_only)
    if args.reference is not None:
        # Paired over seeds (same data order and sampling): the seed-to-seed noise common to both
        # runs cancels, which an unpaired difference of means would keep.
        for mode, r in report.items():
            diffs = [a["gain_points"] - b["gain_points"] for a, b in zip(runs[mode], runs[args.reference])]
            r["minus_reference"] = {**interval(diffs), "reference": args.reference, "per_seed": diffs}
    print_report(report, runs)
    truth = report.get("ground_truth", {}).get("gain", {}).get("mean")
    shares = {m: r["gain"]["mean"] / truth for m, r in report.items() if truth and m != "ground_truth"}
    print(write_result("gain", {"command": " ".join(argv), "overrides": shared, "seeds": args.seeds,
                                "pipeline_seeds": args.pipeline_seeds,
                                "variants": variants,
                                "config": load_config(overrides=shared).to_flat(),
                                "metrics": {"summary": report, "share_of_truth_gain": shares, "runs": runs}}))


def print_report(report: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> None:
    def cell(x: dict[str, float | None]) -> str:
        return f"{x['mean']:+.1f}" + (f" ± {x['ci95']:.1f}" if x["ci95"] is not None else "")

    first = next(iter(runs.values()))[0]
    domains = list(first["before"])
    print(f"{'domain':12s} {'base':>6s} " + " ".join(f"{m:>16s}" for m in report))
    for d in domains:
        print(f"{d:12s} {100 * first['before'][d]['pass_at_1']:6.1f} "
              + " ".join(f"{cell(r['per_domain'][d]):>16s}" for r in report.values()))
    print(f"{'mean':12s} {'':6s} " + " ".join(f"{cell(r['gain']):>16s}" for r in report.values()))
    truth = report.get("ground_truth", {}).get("gain", {}).get("mean")
    for mode, r in report.items():
        share = f", {100 * r['gain']['mean'] / truth:.0f}% of ground truth" if truth and mode != "ground_truth" else ""
        paired = (f"; minus {r['minus_reference']['reference']} {cell(r['minus_reference'])} "
                  f"(per seed {[round(d, 2) for d in r['minus_reference']['per_seed']]})" if "minus_reference" in r else "")
        print(f"{mode}: per seed {r['per_seed']}{share}{paired}; eval SE {r['eval_se_points']:.2f} points; "
              f"wall {r['wall_time_s']['mean']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
