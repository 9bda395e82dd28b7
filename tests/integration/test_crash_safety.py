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


def _argv(out: Path, cache_dir: Path, extra: dict | None = None) -> list[str]:
    flags = []
    for key, value in {**TINY_OVERRIDES, "train_steps": 24, "save_steps": 8, "prompts_per_step": 4,
                       "cache_dir": str(cache_dir), "output_dir": str(out), **(extra or {})}.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    return [sys.executable, "-m", "fedgrpo.cli", "run", *flags]


ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _finish(out: Path, cache_dir: Path, extra: dict | None = None) -> None:
    subprocess.run(_argv(out, cache_dir, extra), env=ENV, check=True, capture_output=True, timeout=600)


def _kill_after_checkpoint(out: Path, cache_dir: Path, step: int, extra_s: float, extra: dict | None = None) -> None:
    """Start the run, and SIGKILL it `extra_s` seconds after checkpoint-`step` is complete."""
    process = subprocess.Popen(_argv(out, cache_dir, extra), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
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
    # A finished run rerun in its directory trains nothing more (transformers' resume at the last
    # step would take one step past it) and reports the same result.
    _finish(straight, cache_dir)
    assert _outcome(straight) == _outcome(killed)
    assert {p.name for p in (straight / "checkpoints").glob("checkpoint-*")} >= {"checkpoint-24"}
    assert not list((straight / "checkpoints").glob("checkpoint-25"))


# Per-value LDP with a budget that stops the clients after the kill (264 distinct values at epsilon 1:
# about 17 steps of the tiny run).
PRIVATE = {"reward_epsilon": 1.0, "privacy_budget": 180.0, "steps_per_generation": 1}


def _released(out: Path) -> dict[str, int]:
    """Each client's own count of the distinct values it released, read from its journal."""
    return {p.parent.name: len({json.loads(line)[1] for line in p.read_text().splitlines()})
            for p in (out / "clients").glob("*/releases.jsonl")}


def test_a_private_run_killed_and_resumed_keeps_every_count_and_equals_the_uninterrupted_one(tmp_path, cache_dir,
                                                                                         prepared):
    straight = tmp_path / "straight"
    _finish(straight, cache_dir, PRIVATE)
    killed = tmp_path / "killed"
    # The same clients: each keeps its own secret (a resumed client continues from its own state;
    # here the second run's clients hold the first run's secrets, so the two runs can be compared).
    for secret in (straight / "clients").glob("*/secret"):
        target = killed / "clients" / secret.parent.name / "secret"
        target.parent.mkdir(parents=True)
        target.write_bytes(secret.read_bytes())
    _kill_after_checkpoint(killed, cache_dir, step=8, extra_s=1.0, extra=PRIVATE)
    at_kill = _released(killed)
    assert at_kill and all(n > 0 for n in at_kill.values())
    _finish(killed, cache_dir, PRIVATE)
    final = _released(killed)
    assert all(final[c] >= n for c, n in at_kill.items())  # never reset by the restart
    assert final == _released(straight)  # values sent again were answered from the journal
    assert _outcome(killed) == _outcome(straight)
    privacy = {p: json.loads((p / "metrics.json").read_text())["privacy"] for p in (straight, killed)}
    assert privacy[killed] == privacy[straight]
    # The budget stopped the clients after the restart, each exactly before it would exceed 180.
    assert privacy[killed]["stopped_by_budget"] == ["client-0", "client-1"]
    assert 8 < privacy[killed]["training_stopped_at"] < 23
    assert all(c["values"]["epsilon"] <= 180.0 for c in privacy[killed]["clients"].values())


# The re-check with probes and spot checks (two clients per domain, both competent: each checks the
# other), an inverting expert corrected on the way (tests/integration/test_private_run.py says why
# these domains and label-scoring experts).
RECHECK = {"domains": ("counting", "gcd"), "val_size": 0, "expert_steps": 0, "num_clients": 4, "probe_share": 0.4,
           "spot_check_share": 0.5, "selection": "oracle", "pool_answers_at_clients": True,
           "adversaries": "client-1:invert", "steps_per_generation": 1}


def test_a_run_with_the_recheck_killed_and_resumed_equals_the_uninterrupted_one(tmp_path, cache_dir):
    straight = tmp_path / "straight"
    _finish(straight, cache_dir, RECHECK)
    killed = tmp_path / "killed"
    _kill_after_checkpoint(killed, cache_dir, step=8, extra_s=1.0, extra=RECHECK)
    _finish(killed, cache_dir, RECHECK)
    assert _outcome(killed) == _outcome(straight)
    checks = {p: json.loads((p / "metrics.json").read_text())["expert_checks"] for p in (straight, killed)}
    assert checks[killed] == checks[straight]
    assert checks[straight]["client-1"]["response"] == "corrected"  # the run had something to restore
    assert sum(c["spot_values"] for c in checks[straight].values()) > 0
    last = {p: (p / "recheck.jsonl").read_text().splitlines()[-1] for p in (straight, killed)}
    assert last[killed] == last[straight]
