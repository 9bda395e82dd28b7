"""A run with local DP on the reward channel: epsilon per client in the report, a budget that stops
clients (their questions re-routed), the fidelity of the noisy channel logged per step."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fedgrpo.cli import print_run_report
from fedgrpo.config import load_config
from fedgrpo.core.privacy import ldp_epsilon
from fedgrpo.engines.run import run

from .conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


def test_dp_run_reports_epsilon_per_client_and_stops_clients_at_their_budget(tmp_path, cache_dir, prepared):
    # Calibration releases 8 values per client (8 auxiliary items), then a step's 4 questions x 8
    # candidates are split over the clients: a budget of 80 (100 values at epsilon 1, delta 1e-5)
    # lasts a few steps; a client then stops, its questions go to the other client, and once both
    # have stopped, training ends early with what it learnt.
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 16,
                                    "prompts_per_step": 4, "steps_per_generation": 1, "reward_epsilon": 1.0,
                                    "privacy_budget": 80.0})
    m = run(config, tmp_path).to_dict()
    privacy = m["privacy"]
    assert privacy["mechanism"] == "randomized_response" and privacy["budget"] == 80.0
    assert set(privacy["epsilon_spent"]) == {"client-0", "client-1"}
    for client, spent in privacy["epsilon_spent"].items():
        assert 0 < spent <= 80.0
        assert spent == pytest.approx(ldp_epsilon(privacy["released"][client], 1.0, 1e-5, "randomized_response"), abs=1e-3)
    assert privacy["stopped_by_budget"] == ["client-0", "client-1"]
    assert set(privacy["stopped_by_budget"]) <= set(m["lost_experts"])
    assert 0 < privacy["training_stopped_at"] < 15 and len(m["step_seconds"]) < 15
    assert (tmp_path / "final-model" / "config.json").is_file()  # what was learnt is kept
    assert m["reward_fidelity"] and all(0 <= f["share"] <= 1 for f in m["reward_fidelity"])
    assert m["graph"]["calibration_failures"] == {}


def test_dp_off_reports_nothing(tmp_path, cache_dir, prepared):
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 2,
                                    "prompts_per_step": 4})
    m = run(config, tmp_path).to_dict()
    assert m["privacy"] is None and m["reward_fidelity"] is None


def test_recheck_reports_every_expert_and_journals_every_round(tmp_path, cache_dir, prepared):
    # The wiring, end to end (what the re-check does with liars: tests/unit/test_recheck.py; at scale:
    # benchmarks/README.md). The tiny experts answer no auxiliary item right, so they claimed none at
    # calibration: there is nothing to probe them on, and neither is flagged, whatever they send.
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 4,
                                    "prompts_per_step": 4, "steps_per_generation": 1, "recheck_every": 3,
                                    "adversaries": "client-1:invert"})
    m = run(config, tmp_path).to_dict()
    checks = m["expert_checks"]
    assert set(checks) == {"client-0", "client-1"}
    for check in checks.values():
        assert check["probe_items"] == check["probe_values"] == 0 and check["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
        assert not check["flagged"] and check["response"] is None
    assert not m["lost_experts"]
    console = Console(record=True, width=400)
    print_run_report(m, console)
    assert "Re-check on probes with known answers: client-0 agreed 0 of 0 (accuracy 0.67); client-1" in console.export_text()
    # One line per scoring round in the journal a resumed run restores its state from.
    assert [json.loads(x)["step"] for x in (tmp_path / "recheck.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
