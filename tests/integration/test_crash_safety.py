"""A run killed with SIGKILL (no polite stop) and rerun with the same output directory ends with the
metrics of an uninterrupted run: accuracy, reward curve, bytes, the final model's weights."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


def _argv(out: Path, cache_dir: Path) -> list[str]:
    flags = []
    for key, value in {**TINY_OVERRIDES, "train_steps": 24, "save_steps": 8, "prompts_per_step": 4,
                       "cache_dir": str(cache_dir), "output_dir": str(out)}.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    return [sys.executable, "-m", "fedgrpo.cli", "run", *flags]


ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _finish(out: Path, cache_dir: Path) -> None:
    subprocess.run(_argv(out, cache_dir), env=ENV, check=True, capture_output=True, timeout=600)


def _kill_after_checkpoint(out: Path, cache_dir: Path, step: int, extra_s: float) -> None:
    """Start the run, and SIGKILL it `extra_s` seconds after checkpoint-`step` is complete."""
    process = subprocess.Popen(_argv(out, cache_dir), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not marker.is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(extra_s)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "metrics.json").exists()


def _outcome(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {"after": metrics["accuracy_after"], "reward_curve": metrics["reward_curve"],
            "bytes": metrics["bytes"]["totals"], "per_step": metrics["bytes"]["per_step"],
            "model": hashlib.sha256((out / "final-model" / "model.safetensors").read_bytes()).hexdigest()}


def test_killed_twice_then_resumed_equals_uninterrupted(tmp_path, cache_dir, prepared):
    straight = tmp_path / "straight"
    _finish(straight, cache_dir)
    killed = tmp_path / "killed"
    _kill_after_checkpoint(killed, cache_dir, step=8, extra_s=0.0)  # right after a checkpoint
    _kill_after_checkpoint(killed, cache_dir, step=16, extra_s=1.0)  # mid-way through later steps
    _finish(killed, cache_dir)
    assert _outcome(killed) == _outcome(straight)
