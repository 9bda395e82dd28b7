"""Choose a method's knobs on the validation split (issue 20): every trial is one run of the method,
scored by its mean greedy pass@1 on validation; the test split is recorded but never used to choose.

Each trial is a named set of overrides; the script runs the bench's method (`fedgrpo.bench.methods`)
once per trial and pipeline seed (resumable: finished trials are read back from --work), ranks the
trials by validation mean (over seeds), and writes every trial, the winner and its knobs to
`results/tune-<method>-<time>.json`. The winner's values are what the config's defaults should say.

Run: .venv/bin/python benchmarks/tune.py --method fedpetuning_sft [--pipeline-seeds 0]
                                         [--set key=value ...] --trial NAME:key=value,... ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from common import write_result
from gain import parse_variants

from fedgrpo import load_config
from fedgrpo.bench.harness import pipeline_seeded
from fedgrpo.bench.methods import METHODS, run_method
from fedgrpo.durable import write_json_atomic


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--pipeline-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--trial", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "tune")
    args = parser.parse_args(argv)
    shared = dict(a.split("=", 1) for a in args.set)
    trials = parse_variants(args.trial)
    method = METHODS[args.method]
    results: dict[str, list[dict[str, Any]]] = {}
    for name, extra in trials.items():
        for seed in args.pipeline_seeds:
            config = pipeline_seeded(load_config(overrides={**shared, **extra}), seed)
            digest = hashlib.sha256(json.dumps({k: str(v) for k, v in config.to_flat().items()},
                                               sort_keys=True).encode()).hexdigest()[:10]
            out = args.work / args.method / f"{name}-{digest}-p{seed}"
            done = out / "result.json"
            if done.is_file():
                result = json.loads(done.read_text())
            else:
                result = run_method(config, method, out)
                result.pop("messages", None)  # bytes stay in the bench; the choice needs accuracy
                write_json_atomic(done, result, indent=None)
            results.setdefault(name, []).append(result)
            v = result["validation"]
            print(f"{name} seed {seed}: validation {100 * v['mean_after']:.1f} (base {100 * v['mean_before']:.1f}), "
                  f"test {100 * result['mean_after']:.1f}", flush=True)
    ranking = sorted(trials, key=lambda n: -statistics.fmean(r["validation"]["mean_after"] for r in results[n]))
    best = ranking[0]
    summary = {n: {"validation_mean": statistics.fmean(r["validation"]["mean_after"] for r in results[n]),
                   "test_mean": statistics.fmean(r["mean_after"] for r in results[n]),
                   "base_validation_mean": statistics.fmean(r["validation"]["mean_before"] for r in results[n]),
                   "overrides": trials[n]} for n in trials}
    print(f"chosen on validation: {best} {trials[best]} ({100 * summary[best]['validation_mean']:.1f})")
    print(write_result(f"tune-{args.method}", {
        "overrides": shared, "pipeline_seeds": args.pipeline_seeds, "method": args.method, "trials": trials,
        "metrics": {"summary": summary, "ranking": ranking, "chosen": best, "chosen_overrides": trials[best],
                    "runs": {n: [{k: v for k, v in r.items() if k != "curve"} for r in rs] for n, rs in results.items()}}}))


if __name__ == "__main__":
    main(sys.argv[1:])
