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
    lines += ["", f"Gain in points of mean greedy pass@1, mean ± 95% interval over {kind} {', '.join(map(str, seeds))}; "
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


RENDERERS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "results-index": results_index,
    "gain-table": gain_table,
    "gain-variants": gain_variants,
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
