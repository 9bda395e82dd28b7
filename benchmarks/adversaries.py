"""The re-check against the adversary zoo (issue 21): one of four experts lying, each behaviour, over seeds.

Per pipeline seed (`gain.py`'s: model_seed = train_seed = selection_seed), every run at the defaults
with the re-check on (``probe_share``, spot checks at their default share):

- ``honest``: nobody lies; ``no-recheck``: nobody lies and nothing is checked (what the re-check's bytes
  are counted against);
- one run per behaviour of the zoo (`scorers/adversary.py`), the liar ``--liar`` (client-1: algebra);
- ``collude``: two experts of the liar's domain lying alike, with two clients per domain
  (``num_clients`` = 2 x domains), beside its own ``honest-pair`` and ``no-recheck-pair``.

It writes, per adversary: the gain (mean and 95% interval over seeds), the paired difference from the
honest run with the same clients (seed by seed, its interval), the liar's domain's gain against the
honest run's there, the step each liar was flagged (and as a share of the training steps) and the
response, per seed; the false flags of honest experts over every run; and the bytes the re-check and
the spot checks add (each run against the run without re-check of the same seed and clients). Finished
runs are kept under --work (default runs/adversaries-work/<digest of the shared overrides>), so a killed
benchmark resumes without redoing them (`gain.one_run`).

Run: .venv/bin/python benchmarks/adversaries.py [--pipeline-seeds 0 1 2] [--set key=value ...]
                                                [--behaviours invert random ...] [--probe-share 0.05]
                                                [--liar client-1] [--no-collude]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import write_result
from gain import _digest, interval, one_run, pipeline_overrides, summarise

from fedgrpo import load_config
from fedgrpo.engines.environment import prepare_process

BEHAVIOURS = ("invert", "random", "max", "probe_aware", "flip:0.3", "lazy", "targeted:0.25")


def plan(shared: dict[str, str], behaviours: list[str], liar: str, share: str, collude: bool) -> dict[str, dict]:
    """Run name -> {"overrides", "liars", "reference" (its honest run), "baseline" (its run without the
    re-check)}."""
    domains = load_config(overrides=shared).data.domains
    on = {"probe_share": share}
    runs: dict[str, dict[str, Any]] = {
        "no-recheck": {"overrides": {"probe_share": "0"}, "liars": [], "reference": "honest",
                       "baseline": "no-recheck"},
        "honest": {"overrides": on, "liars": [], "reference": "honest", "baseline": "no-recheck"},
    }
    for behaviour in behaviours:
        runs[behaviour] = {"overrides": {**on, "adversaries": f"{liar}:{behaviour}"}, "liars": [liar],
                           "reference": "honest", "baseline": "no-recheck"}
    if collude:
        pair = {"num_clients": str(2 * len(domains))}
        # Clients k and k + D hold the same domain (`data.partition`, domain): the liar and its twin.
        twin = f"client-{int(liar.split('-')[1]) + len(domains)}"
        runs["no-recheck-pair"] = {"overrides": {**pair, "probe_share": "0"}, "liars": [],
                                   "reference": "honest-pair", "baseline": "no-recheck-pair"}
        runs["honest-pair"] = {"overrides": {**pair, **on}, "liars": [], "reference": "honest-pair",
                               "baseline": "no-recheck-pair"}
        runs["collude"] = {"overrides": {**pair, **on, "adversaries": f"{liar}:collude,{twin}:collude"},
                           "liars": [liar, twin], "reference": "honest-pair", "baseline": "no-recheck-pair"}
    return runs


def liar_domain(overrides: dict[str, str], liar: str) -> str:
    """The domain a client holds under the domain partition: client k holds domain k mod D."""
    domains = load_config(overrides=overrides).data.domains
    return domains[int(liar.split("-")[1]) % len(domains)]


def report(runs: dict[str, dict[str, Any]], results: dict[str, list[dict[str, Any]]], shared: dict[str, str],
           liar: str) -> dict[str, Any]:
    """Per run: gain, paired difference from its honest run, the liar's domain, flags, responses,
    bytes added; and the false flags of honest experts over every run."""
    steps = load_config(overrides=shared).train.train_steps
    out: dict[str, Any] = {}
    false_flags = []
    for name, spec in runs.items():
        these, honest, baseline = results[name], results[spec["reference"]], results[spec["baseline"]]
        domain = liar_domain({**shared, **spec["overrides"]}, liar)

        def domain_gain(r: dict[str, Any], d: str = domain) -> float:
            return 100 * (r["after"][d]["pass_at_1"] - r["before"][d]["pass_at_1"])

        flags = [{e: {"step": c["flagged_at_step"], "share_of_steps": c["flagged_at_step"] / steps,
                      "response": c["response"]} if c["flagged"] else None for e, c in (r["expert_checks"] or {}).items()
                  if e in spec["liars"]} for r in these]
        for seed, r in enumerate(these):
            for expert_id, check in (r["expert_checks"] or {}).items():
                if check["flagged"] and expert_id not in spec["liars"]:
                    false_flags.append({"run": name, "seed_index": seed, "expert": expert_id,
                                        "step": check["flagged_at_step"], "response": check["response"]})
        added = [(sum(r["bytes"].get(k, 0) for k in ("down", "up")) / sum(b["bytes"].get(k, 0) for k in ("down", "up"))
                  - 1) * 100 for r, b in zip(these, baseline)]
        out[name] = {
            "liars": spec["liars"], "reference": spec["reference"], **summarise(these),
            "minus_honest": {**interval([a["gain_points"] - b["gain_points"] for a, b in zip(these, honest)]),
                             "per_seed": [a["gain_points"] - b["gain_points"] for a, b in zip(these, honest)]},
            "liar_domain": domain,
            "liar_domain_gain": interval([domain_gain(r) for r in these]),
            "liar_domain_share_of_honest": [domain_gain(a) / domain_gain(b) if domain_gain(b) else None
                                            for a, b in zip(these, honest)],
            "flags": flags,
            "bytes_added_percent": interval(added), "bytes_added_per_seed": added,
        }
    out["false_flags_of_honest_experts"] = {"count": len(false_flags), "runs": sum(len(r) for r in results.values()),
                                            "details": false_flags}
    return out


def print_report(summary: dict[str, Any]) -> None:
    def cell(x: dict[str, float | None]) -> str:
        return f"{x['mean']:+.2f}" + (f" ± {x['ci95']:.2f}" if x["ci95"] is not None else "")

    print(f"{'run':16s} {'gain':>14s} {'minus honest':>14s} {'liar domain':>14s} {'bytes +%':>10s}  flagged (step, response)")
    for name, r in summary.items():
        if name == "false_flags_of_honest_experts":
            continue
        flagged = "; ".join(", ".join(f"{e}: {f['step']} {f['response']}" if f else f"{e}: never" for e, f in seed.items())
                            for seed in r["flags"]) if r["liars"] else "-"
        print(f"{name:16s} {cell(r['gain']):>14s} {cell(r['minus_honest']):>14s} {cell(r['liar_domain_gain']):>14s} "
              f"{r['bytes_added_percent']['mean']:>+10.2f}  {flagged}")
    ff = summary["false_flags_of_honest_experts"]
    print(f"false flags of honest experts: {ff['count']} over {ff['runs']} runs")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline-seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides shared by every run")
    parser.add_argument("--behaviours", nargs="+", default=list(BEHAVIOURS), metavar="BEHAVIOUR[:P]",
                        help=f"the zoo's behaviours to run (default: {' '.join(BEHAVIOURS)})")
    parser.add_argument("--probe-share", default="0.05", help="the re-check's probe_share (default 0.05)")
    parser.add_argument("--liar", default="client-1", help="the expert that lies (default client-1)")
    parser.add_argument("--no-collude", action="store_true", help="skip the colluding pair (two clients per domain)")
    parser.add_argument("--work", type=Path, help="where finished runs are kept (resume)")
    args = parser.parse_args(argv)
    if any("=" not in a for a in args.set):
        parser.error("--set takes key=value pairs")
    shared = dict(a.split("=", 1) for a in args.set)
    prepare_process()  # offline and quiet, as the CLI runs (TRL warns on every batch holding a probe's None)
    runs = plan(shared, args.behaviours, args.liar, args.probe_share, not args.no_collude)
    for spec in runs.values():  # a bad adversary or share: one line naming the fix, before any run
        load_config(overrides={**shared, **spec["overrides"]})
    resolved = {k: str(v) for k, v in load_config(overrides=shared).to_flat().items()}
    work = args.work or Path(__file__).resolve().parents[1] / "runs" / "adversaries-work" / _digest(resolved)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for seed in args.pipeline_seeds:
        for name, spec in runs.items():
            overrides = {**shared, **spec["overrides"], **pipeline_overrides(seed)}
            results[name].append(one_run(overrides, work / f"{name}-{_digest(spec['overrides'])}-p{seed}"))
            print(f"seed {seed} {name}: {results[name][-1]['gain_points']:+.2f} points "
                  f"({results[name][-1]['wall_time_s']} s)", flush=True)
    summary = report(runs, results, shared, args.liar)
    print_report(summary)
    print(write_result("adversaries", {"command": " ".join(argv), "overrides": shared,
                                       "pipeline_seeds": args.pipeline_seeds, "runs": {n: s["overrides"] for n, s in runs.items()},
                                       "config": load_config(overrides=shared).to_flat(),
                                       "metrics": {"summary": summary, "runs": results}}))


if __name__ == "__main__":
    main(sys.argv[1:])
