"""Every measured figure in the README and the docs comes from its results file.

`benchmarks/render.py` renders each generated region (tables, lists, inline figures) from the
record it names; these tests fail when a region differs from its record, when a record is missing,
or when a measured figure (a percentage, an interval, points, bytes, a duration, a gain) stands
outside a generated region, where nothing keeps it honest.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import render  # noqa: E402  (benchmarks/ is not a package)

# A measured figure: a number with a unit of measurement (%, points, bytes, time) or an interval.
MEASURED = re.compile(
    r"(?<![\w.])[+-]?\d[\d,]*(?:\.\d+)?(?:\s?(?:%|±|points?\b|pts\b|[kMG]B\b|min\b|s\b)|x\b)"
    r"|±\s?\d")


def _prose(text: str) -> str:
    """The text with code blocks, inline code, generated regions and HTML comments blanked out."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = render.BLOCK.sub("", text)
    text = render.INLINE.sub("", text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def test_every_generated_figure_equals_its_record():
    for path in render.documents():
        text = path.read_text()
        assert render.render_text(text) == text, (
            f"{path.relative_to(ROOT)} differs from its records: run .venv/bin/python benchmarks/render.py")


def test_every_record_named_exists():
    for path in render.documents():
        text = path.read_text()
        for match in [*render.BLOCK.finditer(text), *render.INLINE.finditer(text)]:
            for source in match["source"].split(","):
                if source == ".":  # the results directory itself (an index)
                    continue
                assert (render.RESULTS / source).is_file(), f"{path.name} names a missing record {source}"


@pytest.mark.parametrize("path", render.documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measured_figure_outside_a_generated_region(path):
    stray = [(n + 1, m.group(0)) for n, line in enumerate(_prose(path.read_text()).splitlines())
             for m in MEASURED.finditer(line)]
    assert not stray, f"{path.relative_to(ROOT)}: figures without a record (line, text): {stray[:12]}"


def test_the_lint_can_fail():
    assert MEASURED.search("FedGRPO gains +14.5 points")
    assert MEASURED.search("91% of the gain")
    assert MEASURED.search("a run takes 9 min")
    assert MEASURED.search("1.98 MB of candidates")
    assert MEASURED.search("a step costs 1.37x embedded")
    assert not MEASURED.search("M = 2 experts, L = 20 neighbours, delta 1e-5, Python 3.11, 2,000 x 8 x 4 bytes")
    assert not _prose("<!-- fig source=a key=b fmt=c -->91%<!-- /fig -->").strip()


def test_no_record_or_document_names_one_machines_paths():
    """Records and documents name paths relative to the repository (or ~), never this machine's
    absolute layout (`benchmarks/common.portable` makes them so when a record is written)."""
    absolute = re.compile(r"(?<![\w.~])/(?:work|root|home|Users|tmp)/[\w.-]+")
    for path in [*render.documents(), *sorted(render.RESULTS.glob("*.json"))]:
        found = absolute.findall(path.read_text())
        assert not found, f"{path.relative_to(ROOT)} names absolute paths: {found[:3]}"
