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


RENDERERS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "gain-table": gain_table,
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
