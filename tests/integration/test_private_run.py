"""Private runs end to end: DP-trained experts (record level), label DP (answer-based experts),
per-value LDP (epsilon per client counted by the client and the server, a budget that stops clients,
their questions re-routed, the fidelity of the noisy channel per step), and the re-check's wiring."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fedgrpo.cli import print_run_report
from fedgrpo.config import load_config
from fedgrpo.engines.run import run
from fedgrpo.privacy.accounting import values_epsilon
from fedgrpo.privacy.client import ClientPrivacy
from fedgrpo.privacy.mechanisms import RandomizedResponse

from .conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


def test_per_value_ldp_reports_what_each_client_released_and_stops_clients_at_their_budget(tmp_path, cache_dir,
                                                                                            prepared):
    # Calibration releases 8 values per client (8 auxiliary items), then a step's 4 questions x 8
    # candidates are split over the clients: a budget of 80 (about 100 distinct values at epsilon 1,
    # delta 1e-5) lasts a few steps; a client then stops, its questions go to the other client, and
    # once both have stopped, training ends early with what it learnt.
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 16,
                                    "prompts_per_step": 4, "steps_per_generation": 1, "reward_epsilon": 1.0,
                                    "privacy_budget": 80.0})
    m = run(config, tmp_path).to_dict()
    privacy = m["privacy"]
    assert privacy["plan"]["reward_mechanism"] == "randomized_response" and privacy["plan"]["budget"] == 80.0
    assert set(privacy["clients"]) == {"client-0", "client-1"}
    for client, entry in privacy["clients"].items():
        values = entry["values"]
        # Counted where the release happens (the client's journal) and by the server; the larger reported.
        journal = ClientPrivacy(tmp_path / "clients" / client, values=RandomizedResponse(1.0),
                                calibration=RandomizedResponse(1.0))
        assert values["client_count"] == sum(journal.spent()["released"].values()) >= values["server_count"] > 0
        assert values["client_epsilon"] == pytest.approx(values_epsilon({RandomizedResponse(1.0): values["client_count"]},
                                                                        1e-5), abs=1e-3)
        assert 0 < values["epsilon"] <= 80.0
        assert entry["declared"]["values"]["epsilon_per_value"] == 1.0
    assert privacy["stopped_by_budget"] == ["client-0", "client-1"]
    assert set(privacy["stopped_by_budget"]) <= set(m["lost_experts"])
    assert 0 < privacy["training_stopped_at"] < 15 and len(m["step_seconds"]) < 15
    assert (tmp_path / "final-model" / "config.json").is_file()  # what was learnt is kept
    assert m["reward_fidelity"] and all(0 <= f["share"] <= 1 for f in m["reward_fidelity"])
    assert m["graph"]["calibration_failures"] == {}
    console = Console(record=True, width=400)
    print_run_report(m, console)
    assert "one released value only" in console.export_text()


def test_privacy_off_reports_nothing(tmp_path, cache_dir, prepared):
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 2,
                                    "prompts_per_step": 4})
    m = run(config, tmp_path).to_dict()
    assert m["privacy"] is None and m["reward_fidelity"] is None
    # No client kept privacy state (the text session's store is not privacy state).
    kept = {f.name for f in (tmp_path / "clients").rglob("*") if f.is_file()}
    assert not kept & {"secret", "releases.jsonl", "labels.jsonl"}, kept


def test_dp_trained_experts_declare_a_record_level_guarantee_for_the_whole_run(tmp_path, cache_dir, prepared):
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 2,
                                    "prompts_per_step": 4, "expert_epsilon": 8.0})
    m = run(config, tmp_path).to_dict()
    assert m["privacy"]["plan"]["expert_epsilon"] == 8.0
    for entry in m["privacy"]["clients"].values():
        records = entry["declared"]["records"]
        assert records["unit"] == "record" and 0 < records["epsilon"] <= 8.0 and records["delta"] == 1e-5
        assert records["steps"] == TINY_OVERRIDES["expert_steps"] and records["noise_multiplier"] > 0
        assert "values" not in entry  # nothing to compose: every value is post-processing
    accuracy = m["privacy"]["expert_accuracy"]
    assert set(accuracy) == {"client-0", "client-1"}
    assert all(0 <= a["with_dp"] <= 1 and 0 <= a["without_dp"] <= 1 for a in accuracy.values())
    console = Console(record=True, width=400)
    print_run_report(m, console)
    assert "each record of its private data: epsilon" in console.export_text()


def test_label_dp_randomises_each_label_once_and_reuses_it(tmp_path, cache_dir, prepared):
    config = load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir), "train_steps": 4,
                                    "prompts_per_step": 4, "steps_per_generation": 1,
                                    "pool_answers_at_clients": True, "label_epsilon": 2.0})
    m = run(config, tmp_path).to_dict()
    assert {e["declared"]["labels"]["epsilon"] for e in m["privacy"]["clients"].values()} == {2.0}
    journals = [p.read_text().splitlines() for p in (tmp_path / "clients").glob("*/labels.jsonl")]
    assert journals and all(journals)  # the clients asked about questions they hold labels for
    for lines in journals:  # each record randomised once, however often it was asked
        keys = [json.loads(line)[0] for line in lines]
        assert len(keys) == len(set(keys))


# The end-to-end re-check needs a policy whose candidates on probes are sometimes right and sometimes
# wrong: letter counting and gcd have small answers, which the tiny base gets right often enough after
# its 150 steps (measured on the probes, 8 samples each: 62 and 36 of 64 groups mixed; arithmetic and
# spelling: 5 and 0). The experts score by labels (pool_answers_at_clients: each client holds its
# domain's training questions and probes with their answers), so they need no training of their own,
# and are routed by domain (oracle): what is tested is the re-check's wiring, not the experts' skill.
RECHECK_RUN = {**TINY_OVERRIDES, "domains": ("counting", "gcd"), "val_size": 0, "expert_steps": 0,
               "train_steps": 16, "prompts_per_step": 4, "steps_per_generation": 1, "probe_share": 0.4,
               "selection": "oracle", "pool_answers_at_clients": True}


def test_an_inverting_expert_is_caught_on_probes_and_corrected_and_an_honest_one_never_flagged(tmp_path, cache_dir):
    # Issue 21: probes are training questions mixed into GRPO's dataset; the policy samples their
    # candidates, and each expert's block holding a right and a wrong answer is evidence.
    # client-1 (gcd) inverts every reward.
    config = load_config(overrides={**RECHECK_RUN, "cache_dir": str(cache_dir), "adversaries": "client-1:invert"})
    m = run(config, tmp_path).to_dict()
    checks = m["expert_checks"]
    assert set(checks) == {"client-0", "client-1"}
    honest, liar = checks["client-0"], checks["client-1"]
    assert honest["probe_groups"] > 0 and liar["probe_groups"] > 0  # the policy's candidates were mixed
    assert not honest["flagged"] and honest["agreed"] == honest["probe_values"]
    assert liar["flagged"] and liar["response"] == "corrected" and liar["agreed"] == 0
    assert not m["lost_experts"]  # corrected, not excluded: its domain keeps its expert
    journal = [json.loads(x) for x in (tmp_path / "recheck.jsonl").read_text().splitlines()]
    assert [r["step"] for r in journal] == list(range(16))  # one line per scoring round, for resumed runs
    flagged_at = liar["flagged_at_step"]
    assert journal[flagged_at]["checks"]["client-1"]["response"] == "corrected"
    assert flagged_at == 0 or journal[flagged_at - 1]["checks"].get("client-1", {}).get("response") is None
    console = Console(record=True, width=400)
    print_run_report(m, console)
    assert f"flagged at step {flagged_at}: corrected" in console.export_text()
