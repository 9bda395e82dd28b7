"""The README stays honest: its layout tree lists every module, and its first lines are the two
newcomer commands that .ci/run also uses."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_tree_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"[├└]── ([\w.]+\.py)", readme))
    actual = {p.name for p in (ROOT / "src" / "fedgrpo").rglob("*.py") if p.name != "__init__.py" or p.parent.name == "fedgrpo"}
    assert actual == listed, f"missing from README: {sorted(actual - listed)}; stale: {sorted(listed - actual)}"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash"
    run_cmd, test_cmd = (line.split("  #")[0].strip() for line in lines[1:3])
    assert run_cmd.startswith("bash scripts/bootstrap.sh && .venv/bin/fedgrpo ")
    assert test_cmd == "bash scripts/bootstrap.sh && .venv/bin/python -m pytest"
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_config_reference_is_current():
    from fedgrpo.config import render_config_docs

    # docs/config.md is generated: regenerate with `fedgrpo config --docs > docs/config.md`.
    assert (ROOT / "docs" / "config.md").read_text() == render_config_docs()
