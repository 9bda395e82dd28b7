"""Shared helpers for benchmark scripts: environment block and result files."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def environment() -> dict[str, Any]:
    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:  # noqa: BLE001
            return "absent"

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", True
    import os

    return {
        "python": platform.python_version(),
        **{name: v(name) for name in ("fedgrpo", "torch", "transformers", "trl", "flwr", "reasoning-gym")},
        "device": _device(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, {platform.machine()}",
        "load_average_1m_at_write": round(os.getloadavg()[0], 2),
        "commit": commit,
        "dirty": dirty,
    }


def _device() -> str:
    """The GPU the process computed on, where torch is loaded and sees one; else "cpu"."""
    import sys

    torch = sys.modules.get("torch")  # never imported here just to ask
    if torch is not None and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def portable(value: Any, root: Path = RESULTS.parents[1]) -> Any:
    """`value` with this machine's paths made portable, recursively: the repository root dropped
    (paths relative to it), the home directory as ``~``. A record must not name one machine's layout."""
    if isinstance(value, str):
        value = "." if value == str(root) else value.replace(f"{root}/", "")
        return value.replace(f"{Path.home()}/", "~/")
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    return value


def write_result(name: str, payload: dict[str, Any], results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(portable({"name": name, "created": datetime.now().isoformat(timespec="seconds"),
                                         "env": environment(), **payload}), indent=2))
    return path
