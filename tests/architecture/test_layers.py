"""The layer rules of docs/architecture: light modules stay light, frameworks stay behind adapters.

Each check imports in a fresh subprocess with a meta-path blocker that makes the heavy packages
unimportable, so a stray top-level import fails loudly.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "trl", "peft", "flwr", "datasets", "accelerate")

BLOCKER = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {heavy!r}:
                raise ImportError("blocked heavy import: " + name)
    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    script = BLOCKER.format(heavy=set(HEAVY)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "module",
    ["fedgrpo", "fedgrpo.config", "fedgrpo.errors", "fedgrpo.progress", "fedgrpo.data.prompts",
     "fedgrpo.data.tasks", "fedgrpo.data.gym", "fedgrpo.data.partition", "fedgrpo.cli"],
)
def test_light_modules_import_without_heavy_packages(module):
    proc = _run(f"import {module}")
    assert proc.returncode == 0, proc.stderr


def test_splits_and_config_work_without_heavy_packages():
    proc = _run(
        """
        from fedgrpo import load_config
        from fedgrpo.data.partition import build_splits
        from fedgrpo.training.prepare import split_spec
        cfg = load_config(overrides={"pool_size": 8, "aux_size": 4, "public_size": 4, "eval_size": 4,
                                     "client_size": 4})
        print(len(build_splits(split_spec(cfg)).pool))
        """
    )
    # training.prepare imports models lazily enough that split building needs no torch.
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8"


def test_cli_help_imports_neither_torch_nor_trl():
    proc = _run(
        """
        import sys
        from fedgrpo.cli import main
        try:
            main(["prepare", "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "--aux-size" in proc.stdout


SRC = Path(__file__).resolve().parents[2] / "src" / "fedgrpo"


def test_flower_stays_behind_its_adapters():
    # flwr may be imported only by the Flower transport modules and the app module (architecture §3).
    allowed = {"apps.py"} | {p.name for p in (SRC / "transport").glob("flower_*.py")}
    offenders = [
        str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
        if re.search(r"^\s*(from|import) flwr\b", p.read_text(), re.MULTILINE) and p.name not in allowed
    ]
    assert offenders == []


def test_the_deployment_client_app_imports_no_torch_or_trl():
    # Flower starts a fresh ClientApp process per message in deployment: it must stay a thin
    # forwarder (no torch, transformers or trl), or every message pays seconds of imports.
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"torch", "transformers", "trl", "peft"}:
                    raise ImportError("blocked heavy import: " + name)
        sys.meta_path.insert(0, Block())
        import fedgrpo.apps
        from fedgrpo.transport.expert_service import ExpertServiceClient
        """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("module", ["fedgrpo.transport.failover", "fedgrpo.transport.expert_service"])
def test_engine_neutral_transport_modules_need_no_flower(module):
    proc = _run(f"import {module}")
    assert proc.returncode == 0, proc.stderr
