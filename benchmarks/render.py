"""Render every measured figure of the README and the docs from its results file (issue 20).

Two kinds of generated region, each naming its record:

- a block, for tables and lists::

      <!-- generated:RENDERER source=FILE[,FILE...] -->
      ...rendered Markdown...
      <!-- /generated -->

  RENDERER is a function below (`RENDERERS`), FILE a results file in benchmarks/results;
- an inline figure, for a number in a sentence::

      <!-- fig source=FILE key=metrics.summary.experts.gain.mean fmt=+.1f -->+14.6<!-- /fig -->

  KEY is a dotted path into the JSON (list indices as numbers), FMT a Python format spec (an optional
  `x100` prefix multiplies first, `round` renders an integer with thousands separators).

`python benchmarks/render.py` rewrites every region of README.md and docs/*.md from its record;
`--check` only reports regions that differ (exit 1). tests/architecture/test_figures.py runs the check
and fails where a measured figure (a percentage, a ± interval, points, bytes, seconds) stands outside a
generated region, so no figure can be typed by hand.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = ("README.md", "docs/*.md", "benchmarks/README.md")

BLOCK = re.compile(r"(?P<head><!-- generated:(?P<name>[\w-]+) source=(?P<source>[^ ]+) -->\n)(?P<body>.*?)"
                   r"(?P<end><!-- /generated -->)", re.DOTALL)
INLINE = re.compile(r"(?P<head><!-- fig source=(?P<source>\S+) key=(?P<key>\S+) fmt=(?P<fmt>\S+) -->)(?P<body>.*?)"
                    r"(?P<end><!-- /fig -->)")


def load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.is_file():
        raise SystemExit(f"render: no results file {name} in benchmarks/results")
    return json.loads(path.read_text())


def lookup(record: Any, key: str) -> Any:
    for part in key.split("."):
        record = record[int(part)] if isinstance(record, list) else record[part]
    return record


def format_value(value: Any, fmt: str) -> str:
    if fmt.startswith("x100"):
        value, fmt = 100 * value, fmt[4:] or ".1f"
    if fmt == "round":
        return f"{round(value):,}"
    if fmt == "str":
        return str(value)
    return format(value, fmt)


# --- renderers: (list of records) -> Markdown -------------------------------------------------------------

def _pm(stat: dict[str, Any], fmt: str = "+.1f") -> str:
    if stat is None:
        return ""
    ci = stat.get("ci95")
    return f"{format(stat['mean'], fmt)}" + (f" ± {ci:.1f}" if ci is not None else "")


def _machine(record: dict[str, Any]) -> str:
    env = record.get("env", {})
    return env.get("machine") or f"{env.get('cpu_count', '?')} cores, {env.get('device', 'cpu')}"


def gain_table(records: list[dict[str, Any]]) -> str:
    """A gain.py result: the base and each mode's gain per domain and on the mean (test split), its
    validation gain, its share of ground truth's, per seed."""
    (r,) = records
    m = r["metrics"]
    summary, runs = m["summary"], m["runs"]
    first = next(iter(runs.values()))
    domains = list(first[0]["before"])
    seeds = r.get("pipeline_seeds") or r.get("seeds")
    kind = "pipeline seeds" if r.get("pipeline_seeds") else "train seeds"
    truth = summary.get("ground_truth", {}).get("gain", {}).get("mean")
    lines = [f"| | {' | '.join(domains)} | mean gain (test) | validation gain | share of ground truth | per seed |",
             "|---|" + "---|" * len(domains) + "---|---|---|---|"]
    base = [statistics.fmean(100 * run["before"][d]["pass_at_1"] for run in first) for d in domains]
    lines.append("| base server (mean over seeds) | " + " | ".join(f"{b:.1f}" for b in base) + " | | | | |")
    for mode, s in summary.items():
        share = f"{100 * s['gain']['mean'] / truth:.0f}%" if truth and mode != "ground_truth" else ""
        per_seed = ", ".join(f"{g:+.1f}" for g in s["per_seed"])
        lines.append(f"| {mode.replace('_', ' ')} | " + " | ".join(_pm(s["per_domain"][d]) for d in domains)
                     + f" | **{_pm(s['gain'])}** | {_pm(s.get('validation_gain'))} | {share} | {per_seed} |")
    lines += ["", f"Greedy pass@1 gain in points on the test split ({len(first[0]['before'])} domains of "
              f"{first[0]['before'][domains[0]]['n']} items), mean ± 95% interval over {kind} "
              f"{', '.join(map(str, seeds))}; evaluation standard error "
              f"{next(iter(summary.values()))['eval_se_points']:.1f} points. Record: `benchmarks/results/"
              f"{r['_file']}` ({_machine(r)}, commit {r['env']['commit']}{' dirty' if r['env'].get('dirty') else ''})."]
    spreads = {mode: s["spread"] for mode, s in summary.items() if "spread" in s}
    if spreads:
        lines += ["", "Spread of the gain over pipeline seeds (standard deviation, points): "
                  + "; ".join(f"{mode.replace('_', ' ')} {v['total_sd']:.1f} in all, GRPO alone {v['grpo_sd']:.1f}, "
                              f"building the base and experts {v['models_sd']:.1f}" for mode, v in spreads.items())
                  + "."]
    return "\n".join(lines)


def _privacy_cell(runs: list[dict[str, Any]]) -> str:
    """What a variant's runs guarantee per client, by unit: record-level DP, label DP, per-value LDP."""
    parts = []
    privacy = [r.get("privacy") or {} for r in runs]
    records = [c["declared"]["records"] for p in privacy for c in (p.get("clients") or {}).values()
               if c.get("declared", {}).get("records")]
    if records:
        parts.append(f"each record: epsilon {max(r['epsilon'] for r in records):.2f} at delta "
                     f"{records[0]['delta']:g} for the whole run (noise {min(r['noise_multiplier'] for r in records):.2f}"
                     f"-{max(r['noise_multiplier'] for r in records):.2f})")
    labels = [c["declared"]["labels"] for p in privacy for c in (p.get("clients") or {}).values()
              if c.get("declared", {}).get("labels")]
    if labels:
        parts.append(f"each label: epsilon {labels[0]['epsilon']:g}")
    values = [c["values"] for p in privacy for c in (p.get("clients") or {}).values() if c.get("values")]
    if values:
        parts.append(f"one value only: {min(v['epsilon'] for v in values):,.0f}-{max(v['epsilon'] for v in values):,.0f} "
                     f"over the run ({min(max(v['server_count'], v['client_count'] or 0) for v in values):,}-"
                     f"{max(max(v['server_count'], v['client_count'] or 0) for v in values):,} distinct values)")
    return "; ".join(parts) or "none"


def gain_variants(records: list[dict[str, Any]]) -> str:
    """A gain.py result with named variants: each variant's gain on test and validation, its paired
    difference from the reference, its share of the reference's gain, and what it guarantees."""
    (r,) = records
    m = r["metrics"]
    summary, runs = m["summary"], m["runs"]
    reference = next((s["minus_reference"]["reference"] for s in summary.values() if "minus_reference" in s), None)
    ref_gain = summary[reference]["gain"]["mean"] if reference else None
    lines = ["| run | gain (test) | validation gain | paired difference from " + (reference or "-")
             + " | share of its gain | per seed | privacy per client (what the epsilon protects) |",
             "|---|---|---|---|---|---|---|"]
    for mode, s in summary.items():
        diff = s.get("minus_reference")
        share = f"{100 * s['gain']['mean'] / ref_gain:.0f}%" if ref_gain and mode != reference else ""
        lines.append(f"| {mode} | **{_pm(s['gain'])}** | {_pm(s.get('validation_gain'))} | "
                     + (_pm(diff) if diff and mode != reference else "") + f" | {share} | "
                     + ", ".join(f"{g:+.1f}" for g in s["per_seed"]) + f" | {_privacy_cell(runs[mode])} |")
    seeds = r.get("pipeline_seeds") or r.get("seeds")
    kind = "pipeline seeds" if r.get("pipeline_seeds") else "train seeds"
    over = (f"mean ± 95% interval over {kind} {', '.join(map(str, seeds))}" if len(seeds) > 1
            else f"one run ({kind[:-1]} {seeds[0]}: no interval, not a mean)")
    lines += ["", f"Gain in points of mean greedy pass@1, {over}; "
              f"command `benchmarks/gain.py {r.get('command', '')}`. Record: `benchmarks/results/{r['_file']}` "
              f"({_machine(r)}, commit {r['env']['commit']}{' dirty' if r['env'].get('dirty') else ''})."]
    return "\n".join(lines)


def results_index(records: list[dict[str, Any]]) -> str:
    """Every results file, newest first: when, at which commit, on which machine, from which command.
    The block's source names the directory (``source=.``); the files themselves are the figures."""
    rows = ["| file | created | commit | machine | command |", "|---|---|---|---|---|"]
    files = sorted(RESULTS.glob("*.json"), key=lambda p: p.name.rsplit("-", 2)[-2:], reverse=True)
    for path in files:
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        env = record.get("env", {})
        command = record.get("command") or " ".join(record.get("args", []) if isinstance(record.get("args"), list) else [])
        rows.append(f"| `{path.name}` | {record.get('created', '')} | {env.get('commit', '')}"
                    f"{' (dirty)' if env.get('dirty') else ''} | {_machine(record)} | {command[:80]} |")
    return "\n".join(rows)


def engines_table(records: list[dict[str, Any]]) -> str:
    """An engines.py result: seconds per step on each engine and setting, against embedded, with the
    share of time spent waiting for rewards, the reward round trip, bytes and final accuracy; then the
    bare Flower round trip."""
    (r,) = records
    rows = ["| engine | steps per generation | overlap | s / step | vs embedded, same settings | waiting for rewards "
            "| s / reward round (median) | payload bytes | final mean pass@1 |", "|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        total = run["bytes"].get("down", 0) + run["bytes"].get("up", 0)
        rows.append(f"| {run['engine']} | {run['steps_per_generation']} | {'on' if run['overlap_rewards'] else 'off'} | "
                    f"{run['mean_step_s']:.2f} | {run['vs_embedded']:.2f}x | {100 * run['reward_wait_share']:.0f}% | "
                    f"{run['round_s']:.2f} | {total:,} | {100 * run['mean_after']:.1f} |")
    bare = r.get("bare_round_trip") or {}
    if bare:
        rows += ["", "Bare Flower round trip to every node, an empty handler (median seconds): " + "; ".join(
            f"{engine}: FedGRPO's transport {b['flower_transport']['median_s']:.2f}, Flower's `send_and_receive` "
            f"{b['send_and_receive']['median_s']:.2f}" for engine, b in bare.items()) + "."]
    rows += ["", f"Seconds per step are the mean after the first generation batch (which pays one-off warm-up). "
             f"Command: `benchmarks/engines.py {_args(r.get('args'))}`. Record: `benchmarks/results/{r['_file']}` "
             f"({_machine(r)}, commit {r['env']['commit']}{' dirty' if r['env'].get('dirty') else ''}, "
             f"{r.get('created', '')[:10]})."]
    return "\n".join(rows)


def _args(args: Any) -> str:
    if not isinstance(args, dict):
        return ""
    out = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        out.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(out)


def prepare_table(records: list[dict[str, Any]]) -> str:
    """A prepare_report.py result: greedy pass@1 (%) per domain on the test split of the server
    (and its sampled accuracy) and of every expert, the own domain starred; the GRPO signal; where
    edge pre-training stopped each domain."""
    (r,) = records
    m = r["metrics"]
    domains = list(m["server"])
    lines = ["| model | " + " | ".join(domains) + " | mean |", "|---|" + "---|" * (len(domains) + 1)]

    def row(label: str, scores: dict[str, Any], key: str = "pass_at_1", own: str | None = None) -> str:
        cells = [f"{100 * scores[d][key]:.1f}" + ("*" if d == own else "") for d in domains]
        mean = sum(scores[d][key] for d in domains) / len(domains)
        return f"| {label} | " + " | ".join(cells) + f" | {100 * mean:.1f} |"

    lines.append(row("server (base), greedy", m["server"]))
    if all(m["server"][d].get("sampled_mean") is not None for d in domains):
        lines.append(row("server, sampled at temperature 1", m["server"], "sampled_mean"))
    for expert, scores in m["experts"].items():
        own = m["expert_domains"][expert]
        lines.append(row(f"{expert} expert ({own})", scores, own=own))
    lines += ["", f"Greedy pass@1 (%) on the test split, {m['server'][domains[0]]['n']} items per domain; * marks an "
              f"expert's own domain. GRPO signal: {100 * m['signal_share']:.1f}% of {m['signal_probe']} training "
              "questions have 8 samples at temperature 1 that are neither all right nor all wrong."]
    pretrain = m.get("pretrain")
    if pretrain:
        lines.append(f"Edge pre-training ran {pretrain['steps']:,} steps; each domain reached the target at step: "
                     + ", ".join(f"{d} {s:,}" if s is not None else f"{d} never" for d, s in pretrain["reached"].items())
                     + ".")
    lines.append(f"Record: `benchmarks/results/{r['_file']}` ({_machine(r)}, commit {r['env']['commit']}"
                 f"{' dirty' if r['env'].get('dirty') else ''}).")
    return "\n".join(lines)


def tuning_table(records: list[dict[str, Any]]) -> str:
    """tune.py results, one block per method: every trial's knobs with its validation and test mean
    (greedy pass@1, %), the chosen one first; choices are made on validation only."""
    lines = []
    for r in records:
        m = r["metrics"]
        lines += [f"**{r['method']}** ({len(m['ranking'])} trials, pipeline seeds "
                  f"{', '.join(map(str, r['pipeline_seeds']))}; record `benchmarks/results/{r['_file']}`, "
                  f"{_machine(r)}, commit {r['env']['commit']}):", "",
                  "| trial | knobs | validation mean | test mean |", "|---|---|---|---|"]
        for name in m["ranking"]:
            t = m["summary"][name]
            knobs = ", ".join(f"`{k}`={v}" for k, v in t["overrides"].items())
            mark = " (chosen)" if name == m["chosen"] else ""
            lines.append(f"| {name}{mark} | {knobs} | {100 * t['validation_mean']:.1f} | {100 * t['test_mean']:.1f} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def communication_table(records: list[dict[str, Any]]) -> str:
    """A communication.py result: each way's bytes per seed (payload model and wire), the uplink's
    floor and the downlink against the same run before issue 22, and the goals."""
    (r,) = records
    m = r["metrics"]
    lines = [("| seed | down (payload) | down / before | down (wire) | up (payload) | uplink floor | up / floor "
              "| up (wire) | wire up / floor |"), "|---|---|---|---|---|---|---|---|---|"]
    for seed, x in zip(r["seeds"], m["per_seed"]):
        lines.append(f"| {seed} | {x['down']:,} B | {x['down_over_before']:.3f} (1/{1 / x['down_over_before']:.2f}) "
                     f"| {x['wire_down']:,} B | {x['up']:,} B | {x['uplink_floor']:,} B | {x['up_over_floor']:.2f}x "
                     f"| {x['wire_up']:,} B | {x['wire_up_over_floor']:.2f}x |")
    mean = m["mean"]
    lines += ["", "At the paper's scale (closed form, `core.costs`; FedGRPO as a range: answer-matching scorers from one "
              "distinct answer per block to G, and full texts from the measured compression to 2,048 tokens each):", "",
              "| server model | FedPETuning | DPSDA-FL | FedGRPO, answers | FedGRPO, full texts |", "|---|---|---|---|---|"]
    for model, x in m.get("paper_scale", {}).items():
        a, t = x["fedgrpo_range"]["answers"], x["fedgrpo_range"]["texts"]
        lines.append(f"| {model} | {_mb(x['fedpetuning'])} | {_mb(x['dpsda'])} | {_mb(a['low'])}-{_mb(a['high'])} "
                     f"(1/{x['dpsda'] / a['high']:,.0f} of DPSDA-FL) | {_mb(t['low'])}-{_mb(t['high'])} |")
    lines += ["", (f"Before issue 22 (commit {r['before_commit']}, record `benchmarks/results/{Path(r['before']).name}`) "
              f"the default run of the time (its edge rule asked one check) sent {mean['before_down']:,.0f} B down "
              f"and {mean['before_up']:,.0f} B up (payload model, mean over its seeds). "
              + " ".join(f"Goal {'met' if g['met'] else '**not met**'}: {g['goal']}." for g in m["goals"])
              + f" Command `benchmarks/communication.py {r.get('command', '')}`; record "
              f"`benchmarks/results/{r['_file']}` ({_machine(r)}, commit {r['env']['commit']}"
              f"{' dirty' if r['env'].get('dirty') else ''}).")]
    return "\n".join(lines)


def adversaries_table(records: list[dict[str, Any]]) -> str:
    """An adversaries.py result: per run, the gain, its paired difference from the honest run, the
    liar's domain's gain and share of the honest one there, when the liar was flagged and how it was
    answered, and the bytes the re-check added; then the honest experts' false flags."""
    (r,) = records
    summary = r["metrics"]["summary"]
    lines = [("| run | gain | minus honest | liar's domain gain (share of honest) | flagged at step (share), response "
              "| bytes added |"), "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        if name == "false_flags_of_honest_experts":
            continue
        shares = ", ".join(f"{100 * x:.0f}%" if x is not None else "-" for x in s["liar_domain_share_of_honest"])
        flagged = "; ".join(", ".join(f"{f['step']} ({100 * f['share_of_steps']:.0f}%), {f['response']}" if f else "never"
                                      for f in seed.values()) for seed in s["flags"]) if s["liars"] else "-"
        lines.append(f"| {name} | {_pm(s['gain'])} | {_pm(s['minus_honest']) if s['liars'] else ''} | "
                     f"{_pm(s['liar_domain_gain'])} ({s['liar_domain']}; {shares}) | {flagged} | "
                     f"{s['bytes_added_percent']['mean']:+.1f}% |")
    ff = summary["false_flags_of_honest_experts"]
    seeds = r.get("pipeline_seeds") or []
    lines += ["", f"Honest experts flagged: {ff['count']} over {ff['runs']} runs. Pipeline seeds "
              f"{', '.join(map(str, seeds))}; command `benchmarks/adversaries.py {r.get('command', '')}`; record "
              f"`benchmarks/results/{r['_file']}` ({_machine(r)}, commit {r['env']['commit']}"
              f"{' dirty' if r['env'].get('dirty') else ''})."]
    return "\n".join(lines)


def dp_expert_accuracy(records: list[dict[str, Any]]) -> str:
    """A gain.py result with DP-expert variants: each client's own-domain greedy pass@1 (test split,
    as the run reports it) with DP and without, mean over seeds."""
    (r,) = records
    lines = ["| run | client (domain): with DP / without, mean over seeds |", "|---|---|"]
    for mode, runs in r["metrics"]["runs"].items():
        acc = [((x.get("privacy") or {}).get("expert_accuracy") or {}) for x in runs]
        if not all(acc):
            continue
        cells = []
        for client, first in acc[0].items():
            with_dp = statistics.fmean(a[client]["with_dp"] for a in acc)
            without = statistics.fmean(a[client]["without_dp"] for a in acc)
            cells.append(f"{client} ({first['domain']}): {100 * with_dp:.1f} / {100 * without:.1f}")
        lines.append(f"| {mode} | " + "; ".join(cells) + " |")
    lines += ["", f"Greedy pass@1 (%) of each client's expert in its own domain, test split; record `benchmarks/results/{r['_file']}` "
              f"({_machine(r)}, commit {r['env']['commit']})."]
    return "\n".join(lines)


def dp_experts_table(records: list[dict[str, Any]]) -> str:
    """A dp_experts.py result: per DP-SGD recipe, its knobs, noise multiplier, and the experts' mean
    own-domain greedy pass@1 with DP and without, on validation (where the recipe is chosen) and test."""
    (r,) = records
    m = r["metrics"]
    lines = ["| recipe | overrides | noise multiplier | validation, with DP / without | test, with DP / without |",
             "|---|---|---|---|---|"]
    for name, runs in m["runs"].items():
        experts = [e for run in runs for e in run["experts"].values()]
        noise = sorted({e["guarantee"]["noise_multiplier"] for e in experts})
        mean = {k: 100 * statistics.fmean(e[k] for e in experts) for k in ("val", "val_without_dp", "test", "test_without_dp")}
        chosen = " (best on validation)" if name == m.get("best_on_validation") else ""
        lines.append(f"| {name}{chosen} | {', '.join(f'{k}={v}' for k, v in r['recipes'][name].items())} | "
                     f"{', '.join(f'{x:.2f}' for x in noise)} | {mean['val']:.1f} / {mean['val_without_dp']:.1f} | "
                     f"{mean['test']:.1f} / {mean['test_without_dp']:.1f} |")
    lines += ["", f"Mean over the four clients' experts in their own domains, pipeline seeds "
              f"{', '.join(map(str, r['pipeline_seeds']))}; record `benchmarks/results/{r['_file']}` "
              f"({_machine(r)}, commit {r['env']['commit']})."]
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "tuning-table": tuning_table,
    "prepare-table": prepare_table,
    "engines-table": engines_table,
    "results-index": results_index,
    "gain-table": gain_table,
    "gain-variants": gain_variants,
    "communication-table": communication_table,
    "adversaries-table": adversaries_table,
    "dp-expert-accuracy": dp_expert_accuracy,
    "dp-experts-table": dp_experts_table,
}


# --- the documents ------------------------------------------------------------------------------------------

def documents() -> list[Path]:
    out: list[Path] = []
    for pattern in DOCUMENTS:
        out += sorted(ROOT.glob(pattern))
    return out


def render_text(text: str) -> str:
    def block(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise SystemExit(f"render: no renderer {name!r}; use one of {', '.join(RENDERERS)}")
        records = []
        for source in match["source"].split(","):
            if source == ".":  # the whole results directory (an index)
                continue
            record = load(source)
            record["_file"] = source
            records.append(record)
        return match["head"] + RENDERERS[name](records).rstrip("\n") + "\n" + match["end"]

    def inline(match: re.Match[str]) -> str:
        value = lookup(load(match["source"]), match["key"])
        return match["head"] + format_value(value, match["fmt"]) + match["end"]

    return INLINE.sub(inline, BLOCK.sub(block, text))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path in documents():
        text = path.read_text()
        rendered = render_text(text)
        if rendered != text:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(rendered)
    if check and stale:
        print("render: figures differ from their records in " + ", ".join(map(str, stale))
              + "; run .venv/bin/python benchmarks/render.py")
        return 1
    print("render: " + ("every figure matches its record" if check else f"rewrote {len(stale)} file(s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
