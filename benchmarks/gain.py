"""FedGRPO's accuracy gain without answers against ground-truth GRPO, over seeds, with intervals.

Every run shares the config (models from the cache, steps, candidates per question); per seed
(`train_seed`: GRPO's sampling and data order) the script runs ground-truth GRPO once and FedGRPO
with expert rewards once per variant (a named set of overrides, e.g. a selection rule), so variants
are compared on the same seeds. It reports held-out greedy pass@1 gains per domain and on the mean
as mean +- 95% interval over seeds (Student t), the evaluation's own standard error (binomial, from
the eval set's size), each variant's gain as a share of ground truth's, wall times, and bytes.

Finished runs are kept under --work (default runs/gain-work/<digest of the resolved config>, one
directory per mode, its overrides' digest and seed), so a killed benchmark resumes without redoing
them.

Run: .venv/bin/python benchmarks/gain.py [--seeds 0 1 2] [--set key=value ...]
                                         [--variant NAME:key=value,key=value ...] [--no-truth]
                                         [--reference NAME]
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
        "wall_time_s": metrics["wall_time_s"],
        "timings_s": metrics["timings_s"],
        "bytes": metrics["bytes"]["totals"],
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
    """Gains per domain and on the mean, over the seeds of one mode or variant."""
    domains = list(runs[0]["before"])
    per_domain = {d: interval([100 * (r["after"][d]["pass_at_1"] - r["before"][d]["pass_at_1"]) for r in runs])
                  for d in domains}
    return {"gain": interval([r["gain_points"] for r in runs]), "per_domain": per_domain,
            "per_seed": [r["gain_points"] for r in runs],
            "wall_time_s": interval([r["wall_time_s"] for r in runs]),
            "eval_se_points": eval_standard_error(runs[0]["after"])}


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
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="train_seed values")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides shared by every run")
    parser.add_argument("--variant", action="append", metavar="NAME:KEY=VALUE,...",
                        help="an expert-reward run with these extra overrides (repeatable; default: one, no extras)")
    parser.add_argument("--no-truth", action="store_true", help="skip the ground-truth runs")
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
        {name: {**extra, "use_ground_truth": "false"} for name, extra in variants.items()}
    # Keyed by the whole resolved config, so a change of the defaults never resumes stale runs.
    resolved = {k: str(v) for k, v in load_config(overrides=shared).to_flat().items()}
    work = args.work or Path(__file__).resolve().parents[1] / "runs" / "gain-work" / _digest(resolved)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for seed in args.seeds:
        for mode, extra in modes.items():
            overrides = {**shared, **extra, "train_seed": str(seed)}
            runs[mode].append(one_run(overrides, work / f"{mode}-{_digest(extra)}-seed{seed}"))
            print(f"seed {seed} {mode}: {runs[mode][-1]['gain_points']:+.2f} points "
                  f"({runs[mode][-1]['wall_time_s']} s)", flush=True)
    report = {mode: summarise(rs) for mode, rs in runs.items()}
    if args.reference is not None:
        # Paired over seeds (same data order and sampling): the seed-to-seed noise common to both
        # runs cancels, which an unpaired difference of means would keep.
        for mode, r in report.items():
            diffs = [a["gain_points"] - b["gain_points"] for a, b in zip(runs[mode], runs[args.reference])]
            r["minus_reference"] = {**interval(diffs), "reference": args.reference, "per_seed": diffs}
    print_report(report, runs)
    truth = report.get("ground_truth", {}).get("gain", {}).get("mean")
    shares = {m: r["gain"]["mean"] / truth for m, r in report.items() if truth and m != "ground_truth"}
    print(write_result("gain", {"overrides": shared, "seeds": args.seeds, "variants": variants,
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
