"""Seconds per optimizer step with and without `overlap_rewards`, on the embedded engine.

Two transports: the embedded engine as it is (experts score in-process, on the same cores as
training), and the same with a fixed latency added to every scoring round trip (`--latency`), a
stand-in for a Flower Deployment's 1-4 s round trip (README, *Engines*) without its CPU cost. Per
run: the mean step time after the first generation batch (which pays TRL's warm-up), the seconds
training waited for rewards, the seconds the round trips took, and the final mean pass@1.

Run: .venv/bin/python benchmarks/overlap.py [--steps 16] [--steps-per-generation 1 4] [--latency 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_result

from fedgrpo import load_config
from fedgrpo.engines.experts import embedded_transport
from fedgrpo.engines.run import Connector, run


class _Delayed:
    """The embedded transport with `latency` seconds added to every scoring round trip."""

    def __init__(self, inner: Any, latency: float) -> None:
        self.inner, self.latency = inner, latency
        self.expert_ids, self.expert_domains, self.ledger = inner.expert_ids, inner.expert_domains, inner.ledger

    def calibrate_round(self, request: Any) -> Any:
        return self.inner.calibrate_round(request)

    def score_round(self, step: int, requests: Any) -> Any:
        time.sleep(self.latency)
        return self.inner.score_round(step, requests)

    def close(self) -> None:
        self.inner.close()


def measure(steps: int, spg: int, latency: float, overlap: bool, work: Path) -> dict[str, Any]:
    config = load_config(overrides={"train_steps": steps, "save_steps": 10_000, "steps_per_generation": spg,
                                    "overlap_rewards": "on" if overlap else "off"})
    out = work / f"spg{spg}-lat{latency}-{'overlap' if overlap else 'sync'}"
    out.mkdir(parents=True)
    delayed = Connector(lambda prepared, out: _Delayed(embedded_transport(prepared, out), latency))
    metrics = run(config, out, connector=delayed).to_dict()
    steps_s = metrics["step_seconds"]
    steady = steps_s[spg:]  # the first generation batch pays TRL's warm-up
    return {
        "steps_per_generation": spg, "latency_s": latency, "overlap_rewards": overlap, "steps": len(steps_s),
        "mean_step_s": round(statistics.fmean(steady), 4), "median_step_s": round(statistics.median(steady), 4),
        "first_batch_s": round(sum(steps_s[:spg]), 4),
        "reward_wait_s": metrics["reward_wait_s"], "reward_round_trip_s": metrics["reward_round_trip_s"],
        "train_s": metrics["timings_s"]["train"], "mean_after": metrics["mean_after"],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--steps-per-generation", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--latency", type=float, default=2.0, help="added seconds per round trip (0 also runs)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedgrpo-overlap-") as tmp:
        for spg in args.steps_per_generation:
            for latency in sorted({0.0, args.latency}):
                for overlap in (False, True):
                    row = measure(args.steps, spg, latency, overlap, Path(tmp))
                    rows.append(row)
                    print(f"spg {spg} latency {latency:.1f} s overlap {overlap!s:5}: "
                          f"{row['mean_step_s']:.3f} s/step, waited {row['reward_wait_s']:.1f} s of "
                          f"{row['reward_round_trip_s']:.1f} s of round trips, pass@1 {100 * row['mean_after']:.1f}",
                          flush=True)
    print(write_result("overlap", {"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
