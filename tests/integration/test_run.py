"""`fedgrpo run` end to end on micro models: calibrate, route, train a few GRPO steps, evaluate, resume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from fedgrpo.cli import main
from fedgrpo.config import load_config
from fedgrpo.engines.run import run
from fedgrpo.models.load import load_model

from .conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow

# One scoring round per step (not the default 4 steps per generation), so that per-step bytes, routing
# and resuming at a step boundary are each seen over several rounds in a 2-3 step run.
RUN_OVERRIDES = {**TINY_OVERRIDES, "neighbours": 4, "train_steps": 2, "prompts_per_step": 4, "save_steps": 1,
                 "learning_rate": 1e-3, "steps_per_generation": 1}


@pytest.fixture(scope="module")
def run_result(tmp_path_factory, cache_dir, prepared):
    config = load_config(overrides={**RUN_OVERRIDES, "cache_dir": str(cache_dir)})
    out = tmp_path_factory.mktemp("run")
    return config, out, run(config, out).to_dict()


def test_training_changes_the_weights(run_result, prepared):
    _, _, metrics = run_result
    base, _ = load_model(prepared.server_dir)
    trained, _ = load_model(metrics["final_model"])
    changed = [not torch.equal(a, b) for a, b in zip(base.state_dict().values(), trained.state_dict().values())]
    assert any(changed)


def test_bytes_add_up_to_the_per_message_sum(run_result):
    _, _, metrics = run_result
    b = metrics["bytes"]
    per_step_down = sum(s["down"] for s in b["per_step"].values())
    per_expert_down = sum(e["down"] for e in b["per_expert"].values())
    # Scoring traffic per step plus calibration equals the per-expert totals equals the grand total.
    assert per_step_down + b["totals"]["calibrate_down"] == per_expert_down == b["totals"]["down"]
    # Up: per reply its step (8 B), its form ("bits", 4 B) and one bit per value: 8 auxiliary bits in
    # one byte for each of the 2 experts at calibration...
    assert b["totals"]["calibrate_up"] == 2 * (4 + 1)
    # ... and per step one reply per expert selected for any of its questions (1 or 2 of the 2 under
    # the competence threshold), each one bit per distinct final answer of its questions: 4
    # questions x M*G = 8 candidates hold at most 32, 4 bytes (where 32 floats took 128).
    ups = [s["up"] for s in b["per_step"].values()]
    assert len(ups) == 2
    assert all(12 + 1 <= up <= 2 * (12 + 4) for up in ups), ups
    # The built-in experts read final answers: they were sent those, and every message was also
    # counted as it travels (the expert service's JSON body it would be, on this engine).
    assert set(b["scoring_shape"]) == {"answers"} and b["scoring_shape"]["answers"]["values"] <= 2 * 32
    assert b["wire_totals"]["unrecorded"] == 0 and b["wire_totals"]["down"] > 0
    assert b["totals"]["score_up"] == sum(ups)
    assert b["stale_replies"] == 0


def test_routing_and_report(run_result):
    _, out, m = run_result
    assert m["mode"] == "experts" and m["failures"] == {}
    assert 0.0 <= m["routing"]["hit_rate"] <= 1.0
    assert set(m["accuracy_after"]) == {"arithmetic", "spelling"}
    assert len(m["reward_curve"]) == 2
    assert (out / "graph.json").is_file() and (out / "routing.json").is_file()


def test_a_rerun_resumes_from_the_last_checkpoint(run_result, cache_dir):
    config, out, _ = run_result
    longer = replace(config, train=replace(config.train, train_steps=3))
    again = run(longer, out)
    # Only the missing step ran: the reward curve continues from the checkpoint's log history.
    assert [p["step"] for p in again.reward_curve] == [1, 2, 3]
    # The traffic ledger resumed too: calibration (not repeated) and the first steps still count.
    first = run_result[2]["bytes"]
    assert again.bytes["totals"]["calibrate_down"] == first["totals"]["calibrate_down"] > 0
    assert set(again.bytes["per_step"]) == {*first["per_step"], 2}


def test_ground_truth_mode_needs_no_experts(tmp_path, cache_dir, prepared):
    out = tmp_path / "gt"
    argv = ["run", "--use-ground-truth", "--output-dir", str(out), "--cache-dir", str(cache_dir)]
    for key, value in RUN_OVERRIDES.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "ground_truth" and metrics["bytes"]["totals"] == {}
    assert (out / "reward.png").is_file() and (out / "accuracy.png").is_file()


def test_overlapped_runs_with_in_process_experts_are_reproducible(tmp_path, cache_dir, prepared):
    # overlap_rewards on the embedded engine: the experts (real micro models, greedy) score on a
    # background thread while the policy samples and trains on the main one. Same seeds, same run.
    config = load_config(overrides={**RUN_OVERRIDES, "train_steps": 3, "save_steps": 10, "overlap_rewards": "on",
                                    "cache_dir": str(cache_dir)})
    outs = [tmp_path / name for name in ("a", "b")]
    for out in outs:
        out.mkdir()
    first, second = (run(config, out).to_dict() for out in outs)
    assert first["overlap_rewards"] and first["reward_curve"] == second["reward_curve"]
    assert len(first["reward_curve"]) == 3 and all(p["reward"] is not None for p in first["reward_curve"])
    a, _ = load_model(first["final_model"])
    b, _ = load_model(second["final_model"])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # Training waited for part of the round trips at most (here the micro experts answer while the
    # next batch is generated, so it may not wait at all).
    assert first["reward_round_trip_s"] > 0 and 0 <= first["reward_wait_s"] <= first["reward_round_trip_s"]
