"""Client scoring: agreement, the answer/model gate, calibration bits and reply shape.

The expert model is replaced by pre-seeded expert answers (the client computes each answer once and
caches it), so no model is loaded here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedgrpo.data.prompts import PREFILL
from fedgrpo.data.tasks import Question
from fedgrpo.scorers.base import ScorerError
from fedgrpo.scorers.expert import LocalExpert, _majority
from fedgrpo.scorers.verifier import answers_agree, score_against
from fedgrpo.types import CalibrationItem, CalibrationRequest, ScoreItem, ScoreRequest

GEN = "basic_arithmetic"


def _client(private=(), mode="gated", seeded=None, scorer=None) -> LocalExpert:
    client = LocalExpert("client-0", list(private), Path("/nonexistent"), mode=mode, style=PREFILL, expert_samples=1,
                         max_new_tokens=24, batch_size=256, seed=0, scorer=scorer)
    client._expert_answers.update(seeded or {})  # stands in for the expert model's own answers
    return client


def test_agreement_uses_the_verifier_then_math_verify():
    assert answers_agree(GEN, "Calculate 2 + 3.", "5", "5")
    # Another notation of the same number: the string verifier says no, math-verify says yes.
    assert answers_agree(GEN, "Calculate 2 + 3.", "5.0", "5")
    assert not answers_agree(GEN, "Calculate 2 + 3.", "15", "5")  # partial credit is not agreement
    assert not answers_agree(GEN, "Calculate 2 + 3.", None, "5")
    assert not answers_agree(GEN, "Calculate 2 + 3.", "5", None)


def test_score_against_extracts_the_final_answer():
    assert score_against(GEN, "q", "5</answer>", "5", PREFILL) == 1.0
    assert score_against(GEN, "q", "5", "5", PREFILL) == 0.0  # never closed: no final answer
    assert score_against(GEN, "q", "garbage", "5", PREFILL) == 0.0


def test_model_based_rewards_agreement_with_the_expert():
    client = _client(seeded={"q1": "7"})
    request = ScoreRequest(3, (ScoreItem("q1", GEN, "Calculate 3 + 4.", ("7</answer>", "8</answer>", "", "7 </answer>")),))
    reply = client.score(request)
    assert reply.step == 3
    assert reply.rewards == (1.0, 0.0, 0.0, 1.0)


def test_answer_based_wins_when_the_client_holds_the_question():
    held = Question("q1", "arithmetic", GEN, "Calculate 3 + 4.", "7")
    # The expert model would say 8, but the client's trusted label says 7: the gate picks the label.
    client = _client(private=[held], seeded={"q1": "8"})
    reply = client.score(ScoreRequest(0, (ScoreItem("q1", GEN, held.question, ("7</answer>", "8</answer>")),)))
    assert reply.rewards == (1.0, 0.0)


def test_answer_gate_matches_by_normalised_text_too():
    held = Question("other-id", "arithmetic", GEN, "Calculate  3 + 4.", "7")
    client = _client(private=[held], seeded={"q9": "8"})
    reply = client.score(ScoreRequest(0, (ScoreItem("q9", GEN, "calculate 3 + 4.", ("7</answer>",)),)))
    assert reply.rewards == (1.0,)


def test_model_mode_ignores_labels_and_answer_mode_abstains():
    held = Question("q1", "arithmetic", GEN, "Calculate 3 + 4.", "7")
    item = ScoreItem("q1", GEN, held.question, ("7</answer>",))
    assert _client([held], mode="model", seeded={"q1": "8"}).score(ScoreRequest(0, (item,))).rewards == (0.0,)
    unknown = ScoreItem("q2", GEN, "Calculate 1 + 1.", ("2</answer>",))
    [reward] = _client([held], mode="answer").score(ScoreRequest(0, (unknown,))).rewards
    assert math.isnan(reward)  # no label and no model allowed: the reward is missing, not zero


def test_calibration_returns_one_bit_per_item():
    client = _client(seeded={"a1": "5", "a2": "9"})
    request = CalibrationRequest((CalibrationItem("a1", GEN, "Calculate 2 + 3.", "5"),
                                  CalibrationItem("a2", GEN, "Calculate 4 + 4.", "8")))
    assert client.calibrate(request).correct == (1.0, 0.0)


def test_a_custom_scorer_with_the_wrong_shape_is_an_error():
    client = _client(scorer=lambda items: [[1.0] for _ in items])
    request = ScoreRequest(0, (ScoreItem("q", GEN, "Calculate 1 + 1.", ("2</answer>", "3</answer>")),))
    with pytest.raises(ScorerError):
        client.score(request)


def test_a_custom_scorer_replaces_the_builtin_logic():
    client = _client(scorer=lambda items: [[0.25] * len(i.candidates) for i in items])
    request = ScoreRequest(0, (ScoreItem("q", GEN, "Calculate 1 + 1.", ("2</answer>", "3</answer>")),))
    assert client.score(request).rewards == (0.25, 0.25)


def test_majority_vote_ignores_missing_answers():
    assert _majority(["3", None, "4", "3"]) == "3"
    assert _majority([None, None]) is None


@pytest.mark.parametrize("bad", [2.0, -0.5, float("inf"), 1e9])
def test_a_reward_outside_the_declared_range_never_leaves_the_client(bad):
    client = _client(scorer=lambda items: [[bad] + [None] * (len(i.candidates) - 1) for i in items])
    with pytest.raises(ScorerError, match="outside"):
        client.score(ScoreRequest(0, (ScoreItem("q1", "basic_arithmetic", "Calculate 1 + 1.", ("2", "3")),)))


# --- privacy at the client boundary --------------------------------------------------------------------

def _private_client(tmp_path, epsilon, budget=None):
    from fedgrpo.privacy.client import ClientPrivacy, PrivateExpert
    from fedgrpo.privacy.mechanisms import RandomizedResponse

    client = LocalExpert("client-0", [], Path("/nonexistent"), mode="model", style=PREFILL, expert_samples=1,
                         max_new_tokens=24, batch_size=256, seed=0)
    client._expert_answers.update({"q": "2", "a1": "5", "a2": "7"})
    rr = RandomizedResponse(epsilon)
    return PrivateExpert(client, ClientPrivacy(tmp_path, values=rr, calibration=rr, budget=budget))


def _request(step=0, offset=0):
    candidates = tuple(f"{2 + k}</answer>" if k % 2 == 0 else f"3{k}</answer>" for k in range(offset, offset + 8))
    return ScoreRequest(step, (ScoreItem("q", GEN, "Calculate 1 + 1.", candidates),))


def test_rewards_leave_the_client_through_randomized_response_and_it_logs_fidelity(tmp_path):
    clean = (1.0,) + (0.0,) * 7
    assert _private_client(tmp_path / "a", 60.0).score(_request()).rewards == clean  # epsilon 60: p = 1 - 1e-26
    noisy_client = _private_client(tmp_path / "b", 0.1)
    flips = sum(r != c for step in range(50)
                for r, c in zip(noisy_client.score(_request(step, offset=8 * step)).rewards,
                                (1.0,) + (0.0,) * 7 if step == 0 else (0.0,) * 8))
    assert 0.35 < flips / 400 < 0.6  # p = 0.525 at epsilon 0.1
    assert noisy_client.privacy.spent()["released"] == {"randomized_response": 400}
    assert len(noisy_client.fidelity) >= 1


def test_a_client_stops_before_its_budget_is_exceeded(tmp_path):
    from fedgrpo.privacy.accounting import max_values
    from fedgrpo.privacy.client import PrivacyBudgetSpent
    from fedgrpo.privacy.mechanisms import RandomizedResponse

    budget = 11.0  # at epsilon 1 per value: room for 11 values
    assert max_values(RandomizedResponse(1.0), {}, budget, 1e-5) == 11
    client = _private_client(tmp_path, 1.0, budget=budget)
    client.score(_request())  # 8 values
    with pytest.raises(PrivacyBudgetSpent, match="privacy budget spent"):
        client.score(_request(1, offset=8))  # 8 more would make 16 > 11
    assert client.score(_request(2)).rewards  # the same values again: the same release, free
    request = CalibrationRequest((CalibrationItem("a1", GEN, "Calculate 2 + 3.", "5"),
                                  CalibrationItem("a2", GEN, "Calculate 4 + 4.", "8")))
    assert len(client.calibrate(request).correct) == 2
    assert client.privacy.spent()["released"] == {"randomized_response": 10}
