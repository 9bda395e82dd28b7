"""FedGRPO's accuracy gain without answers against the same run with ground-truth rewards.

Both runs share every setting (models from the cache, seeds, steps, candidates per question); the only
difference is `use_ground_truth`. Reports held-out greedy pass@1 per domain before and after each run,
the gains side by side, the no-answer gain as a share of the ground-truth gain (the issue's goal: at
least 90%), wall time and bytes.

Run: .venv/bin/python benchmarks/gain.py [--set key=value ...]
     e.g. --set train_steps=450 temperature=0.7 num_clients=8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import write_result

from fedgrpo import load_config
from fedgrpo.engines.run import run


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides shared by both runs")
    args = parser.parse_args(argv)
    bad = [a for a in args.set if "=" not in a]
    if bad:
        parser.error(f"--set takes key=value pairs; got {bad[0]!r}")
    shared = dict(a.split("=", 1) for a in args.set)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fedgrpo-gain-") as tmp:
        for mode, use_gt in (("experts", "false"), ("ground_truth", "true")):
            config = load_config(overrides={**shared, "use_ground_truth": use_gt})
            out = Path(tmp) / mode
            out.mkdir()
            metrics = run(config, out).to_dict()
            runs[mode] = {
                "before": {d: s["pass_at_1"] for d, s in metrics["accuracy_before"].items()},
                "after": {d: s["pass_at_1"] for d, s in metrics["accuracy_after"].items()},
                "gain_points": metrics["gain_points"],
                "wall_time_s": metrics["wall_time_s"],
                "timings_s": metrics["timings_s"],
                "bytes": metrics["bytes"]["totals"],
                "routing_hit_rate": (metrics["routing"] or {}).get("hit_rate"),
            }
    experts, truth = runs["experts"], runs["ground_truth"]
    share = experts["gain_points"] / truth["gain_points"] if truth["gain_points"] > 0 else None
    print(f"{'domain':12s} {'before':>7s} {'experts':>8s} {'truth':>7s}")
    for domain, before in experts["before"].items():
        print(f"{domain:12s} {100 * before:7.1f} {100 * (experts['after'][domain] - before):+8.1f} "
              f"{100 * (truth['after'][domain] - before):+7.1f}")
    print(f"mean gain: experts {experts['gain_points']:+.1f}, ground truth {truth['gain_points']:+.1f}"
          + (f", share {100 * share:.0f}%" if share is not None else ""))
    print(f"wall time: experts {experts['wall_time_s']} s, ground truth {truth['wall_time_s']} s")
    print(write_result("gain", {"overrides": shared, "config": load_config(overrides=shared).to_flat(),
                                "metrics": {**runs, "no_answer_share_of_truth_gain": share}}))


if __name__ == "__main__":
    main(sys.argv[1:])
