"""The default run's bytes against the floor and against the messages before issue 22, per seed.

Reads two gain.py results (nothing is rerun): `--runs`, the default run at the current code (its
`--mode`, default ``experts``), and `--before`, a default run from before issue 22's message forms
(its `--before-mode`). Per pipeline seed it reports, each way, the payload model (`core.comm`: the
unit the issue's figures use, fields' contents with 8 B per integer) and the serialized size as it
travelled (the expert service's JSON body on the embedded engine), and

- the uplink floor: one bit per binary reward the run produced (every candidate an expert scored,
  M x G per question visit; `scoring_shape.candidates`), so ``up / floor`` is how far the rewards are
  from their information content, the step and form of every reply included;
- ``down / before``: the downlink against the same run before (question and candidate texts every time).

Run: .venv/bin/python benchmarks/communication.py --runs gain-NEW.json --before gain-OLD.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, write_result


def per_run(run: dict[str, Any]) -> dict[str, Any]:
    """One run's bytes each way, its floor and ratios (None where the record lacks the field)."""
    payload, wire = run["bytes"], run.get("wire_bytes") or {}
    shape = run.get("scoring_shape") or {}
    form = next(iter(shape.values()), {}) if shape else {}
    candidates = form.get("candidates")
    floor = math.ceil(candidates / 8) if candidates else None
    score_up = payload.get("score_up")
    return {
        "down": payload.get("down"), "up": payload.get("up"), "score_down": payload.get("score_down"),
        "score_up": score_up, "wire_down": wire.get("down"), "wire_up": wire.get("up"),
        "wire_score_up": wire.get("score_up"), "form": next(iter(shape), None), "candidates": candidates,
        "values": form.get("values"), "uplink_floor": floor,
        "up_over_floor": score_up / floor if floor and score_up else None,
        "wire_up_over_floor": wire.get("score_up") / floor if floor and wire.get("score_up") else None,
    }


def summarise(values: list[float | None]) -> float | None:
    return statistics.fmean(values) if values and all(v is not None for v in values) else None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="gain.py result of the default run (benchmarks/results/...)")
    parser.add_argument("--mode", default="experts")
    parser.add_argument("--before", required=True, help="gain.py result of the default run before issue 22")
    parser.add_argument("--before-mode", default="fedgrpo")
    args = parser.parse_args(argv)
    now = json.loads((RESULTS / Path(args.runs).name).read_text())
    before = json.loads((RESULTS / Path(args.before).name).read_text())
    runs = [per_run(r) for r in now["metrics"]["runs"][args.mode]]
    old = [per_run(r) for r in before["metrics"]["runs"][args.before_mode]]
    seeds = now.get("pipeline_seeds") or now.get("seeds")
    for r, o in zip(runs, old):
        r["down_over_before"] = r["down"] / o["down"]
        r["up_over_before"] = r["up"] / o["up"]
    keys = ("down", "up", "wire_down", "wire_up", "uplink_floor", "up_over_floor", "wire_up_over_floor",
            "down_over_before", "up_over_before")
    mean = {k: summarise([r[k] for r in runs]) for k in keys}
    mean["before_down"] = summarise([o["down"] for o in old])
    mean["before_up"] = summarise([o["up"] for o in old])
    goals = {
        "uplink within 1.25x of the floor (payload model, every reply's step and form included)":
            all(r["up_over_floor"] is not None and r["up_over_floor"] <= 1.25 for r in runs),
        "downlink at most 1/5 of before (payload model)": all(r["down_over_before"] <= 0.2 for r in runs),
    }
    for r, s in zip(runs, seeds):
        print(f"seed {s}: down {r['down']:,} B ({r['down_over_before']:.3f} of before), up {r['up']:,} B "
              f"({r['up_over_floor'] or float('nan'):.2f}x the floor {r['uplink_floor']}); wire down "
              f"{r['wire_down']}, up {r['wire_up']}")
    for goal, met in goals.items():
        print(f"{'met' if met else 'NOT met'}: {goal}")
    print(write_result("communication", {
        "command": " ".join(argv), "runs": args.runs, "before": args.before, "seeds": seeds,
        "before_commit": before["env"]["commit"], "runs_commit": now["env"]["commit"],
        "metrics": {"per_seed": runs, "before_per_seed": old, "mean": mean,
                    "goals": [{"goal": g, "met": m} for g, m in goals.items()]}}))


if __name__ == "__main__":
    main(sys.argv[1:])
