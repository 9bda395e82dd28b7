"""The default run's bytes against the floor and against the messages before issue 22, per seed.

Reads two gain.py results (nothing is rerun): `--runs`, the default run at the current code (its
`--mode`, default ``experts``), and `--before`, a default run from before issue 22's message forms
(its `--before-mode`). Per pipeline seed it reports, each way, the payload model (`core.comm`: the
unit the issue's figures use, fields' contents with 8 B per integer) and the serialized size as it
travelled (the expert service's JSON body on the embedded engine), and

- the uplink floor: one bit per binary reward the run produced. Every question visit's M x G
  candidates are scored once (split among its selected experts, or all to one when only one clears
  the competence threshold), so a run produces train_steps x prompts_per_step x M x G rewards; a
  record with the run's scoring shape (`scoring_shape.candidates`) is checked against it. ``up /
  floor`` is how far the rewards are from their information content, every reply's step and form
  included;
- ``down / before``: the downlink against the same run before (question and candidate texts every time);
- the paper's scale (`core.costs.paper_scale_table` at its documented schedule): FedGRPO's closed form
  as a range for answer-matching scorers and for full texts, against DPSDA-FL and FedPETuning.

A record written before gain.py kept the wire sizes takes them from the runs' traffic ledgers
(`--traffic DIR ...`, each run's directory in seed order: its ``traffic.jsonl`` holds every message's
payload and wire size); the payload totals read there must equal the record's.

Run: .venv/bin/python benchmarks/communication.py --runs gain-NEW.json --before gain-OLD.json [--traffic DIR ...]
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

from fedgrpo.core.costs import paper_scale_table


def rewards_produced(config: dict[str, Any]) -> int:
    """Rewards a run produces: M x G per question visit, train_steps x prompts_per_step visits."""
    return (int(config["train_steps"]) * int(config["prompts_per_step"]) * int(config["experts_per_question"])
            * int(config["generations_per_expert"]))


def ledger_totals(run_dir: Path, steps: int) -> dict[str, dict[str, int]]:
    """Payload and wire totals per direction from a run's traffic ledger (calibration, step -1,
    included; a message after the last step, from a rerun, is not part of the run)."""
    totals: dict[str, dict[str, int]] = {"payload": {}, "wire": {}}
    for line in (run_dir / "traffic.jsonl").read_text().splitlines():
        phase, step, _, direction, payload, wire = json.loads(line)
        if step >= steps:
            continue
        for kind, size in (("payload", payload), ("wire", wire)):
            t = totals[kind]
            t[direction] = t.get(direction, 0) + size
            t[f"{phase}_{direction}"] = t.get(f"{phase}_{direction}", 0) + size
    return totals


def per_run(run: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """One run's bytes each way, its floor and ratios (None where the record lacks the field)."""
    payload, wire = run["bytes"], run.get("wire_bytes") or {}
    shape = run.get("scoring_shape") or {}
    form = next(iter(shape.values()), {}) if shape else {}
    candidates = rewards_produced(config)
    if form.get("candidates") not in (None, candidates):
        raise SystemExit(f"the run's scoring shape holds {form['candidates']} candidates, not the {candidates} "
                         "its config produces: a run that ended early or resumed; measure a whole run")
    floor = math.ceil(candidates / 8)
    score_up = payload.get("score_up")
    return {
        "down": payload.get("down"), "up": payload.get("up"), "score_down": payload.get("score_down"),
        "score_up": score_up, "wire_down": wire.get("down"), "wire_up": wire.get("up"),
        "wire_score_up": wire.get("score_up"), "form": next(iter(shape), None), "candidates": candidates,
        "values": form.get("values"), "uplink_floor": floor,
        "up_over_floor": score_up / floor if floor and score_up else None,
        "wire_up_over_floor": wire.get("score_up") / floor if floor and wire.get("score_up") else None,
    }


def mean_or_none(values: list[float | None]) -> float | None:
    return statistics.fmean(values) if values and all(v is not None for v in values) else None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="gain.py result of the default run (benchmarks/results/...)")
    parser.add_argument("--mode", default="experts")
    parser.add_argument("--before", required=True, help="gain.py result of the default run before issue 22")
    parser.add_argument("--before-mode", default="fedgrpo")
    parser.add_argument("--traffic", nargs="*", type=Path, default=[], metavar="DIR",
                        help="the --runs record's run directories, in seed order (for wire sizes it lacks)")
    args = parser.parse_args(argv)
    now = json.loads((RESULTS / Path(args.runs).name).read_text())
    before = json.loads((RESULTS / Path(args.before).name).read_text())
    records = now["metrics"]["runs"][args.mode]
    for record, run_dir in zip(records, args.traffic):
        ledger = ledger_totals(run_dir, int(now["config"]["train_steps"]))
        if any(ledger["payload"].get(k) != v for k, v in record["bytes"].items()):
            raise SystemExit(f"{run_dir}/traffic.jsonl does not add up to the record's bytes: another run")
        record["wire_bytes"] = ledger["wire"]
    runs = [per_run(r, now["config"]) for r in records]
    old = [per_run(r, before["config"]) for r in before["metrics"]["runs"][args.before_mode]]
    seeds = now.get("pipeline_seeds") or now.get("seeds")
    for r, o in zip(runs, old):
        r["down_over_before"] = r["down"] / o["down"]
        r["up_over_before"] = r["up"] / o["up"]
    keys = ("down", "up", "wire_down", "wire_up", "uplink_floor", "up_over_floor", "wire_up_over_floor",
            "down_over_before", "up_over_before")
    mean = {k: mean_or_none([r[k] for r in runs]) for k in keys}
    mean["before_down"] = mean_or_none([o["down"] for o in old])
    mean["before_up"] = mean_or_none([o["up"] for o in old])
    goals = {
        "uplink within 1.25x of the floor (payload model, every reply's step and form included)":
            all(r["up_over_floor"] is not None and r["up_over_floor"] <= 1.25 for r in runs),
        "downlink at most 1/5 of before (payload model)": all(r["down_over_before"] <= 0.2 for r in runs),
    }
    paper = paper_scale_table()
    goals["at the paper's scale, FedGRPO (answer-matching scorers) at most 1/10 of DPSDA-FL's bytes over the "
          "closed form's whole range"] = all(r["fedgrpo_range"]["answers"]["high"] <= r["dpsda"] / 10
                                             for r in paper.values())
    goals["at the paper's scale, FedGRPO (answer-matching scorers) at most 1/1,000 of FedPETuning's over the "
          "closed form's whole range"] = all(r["fedgrpo_range"]["answers"]["high"] <= r["fedpetuning"] / 1000
                                             for r in paper.values())
    for r, s in zip(runs, seeds):
        print(f"seed {s}: down {r['down']:,} B ({r['down_over_before']:.3f} of before), up {r['up']:,} B "
              f"({r['up_over_floor'] or float('nan'):.2f}x the floor {r['uplink_floor']}); wire down "
              f"{r['wire_down']}, up {r['wire_up']}")
    for goal, met in goals.items():
        print(f"{'met' if met else 'NOT met'}: {goal}")
    print(write_result("communication", {
        "command": " ".join(argv), "runs": args.runs, "before": args.before, "seeds": seeds,
        "before_commit": before["env"]["commit"], "runs_commit": now["env"]["commit"],
        "metrics": {"per_seed": runs, "before_per_seed": old, "mean": mean, "paper_scale": paper,
                    "goals": [{"goal": g, "met": m} for g, m in goals.items()]}}))


if __name__ == "__main__":
    main(sys.argv[1:])
