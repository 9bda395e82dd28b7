"""Failover: a lost expert's questions go to the next-best expert by competence, for this step and
the rest of the run; failures stay reported; no expert left means NaN, never a made-up reward.

Run: pytest tests/unit/test_failover.py
"""

from __future__ import annotations

import math

from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.failover import FailoverTransport
from fedgrpo.types import ExpertFailure, FailureKind, Hello, ScoreItem, ScoreReply, ScoreRequest


class Expert:
    """Rewards every candidate with its own constant (in the reward range, and one of the 8-bit levels a
    real-valued reward travels as: k / 255), so a reply shows who scored it."""

    def __init__(self, value: float, fails: bool = False):
        self.value, self.fails, self.asked = value, fails, 0

    def hello(self) -> Hello:
        return Hello("expert", "arithmetic")

    def score(self, request: ScoreRequest) -> ScoreReply:
        self.asked += 1
        if self.fails:
            raise ConnectionError("site offline")
        return ScoreReply(request.step, (self.value,) * request.num_candidates)


def _item(qid: str, g: int = 2) -> ScoreItem:
    return ScoreItem(qid, "basic_arithmetic", f"question {qid}", tuple(f"{i}</answer>" for i in range(g)))


# Best first, per question: a > b > c > d for q1; q2 prefers c, then a.
RANKING = {"q1": ("a", "b", "c", "d"), "q2": ("c", "a", "b", "d")}


def _setup(**fails):
    experts = {name: Expert(value, fails=fails.get(name, False))
               for name, value in (("a", 0.2), ("b", 0.4), ("c", 0.6), ("d", 0.8))}
    return experts, FailoverTransport(EmbeddedTransport(experts, timeout_s=5), RANKING)


def test_a_failed_experts_questions_go_to_the_next_best_free_expert():
    experts, transport = _setup(a=True)
    # q1 is scored by a and b (its top 2); q2 by c and a.
    results = transport.score_round(0, {"a": ScoreRequest(0, (_item("q1"), _item("q2"))),
                                  "b": ScoreRequest(0, (_item("q1"),)),
                                  "c": ScoreRequest(0, (_item("q2"),))})
    # q1's next-best after a and b is c; q2's next-best after c and a is b. The rewards come back
    # in a's place, in a's request order, so the federated group keeps all its members.
    assert results.replies["a"].rewards == (0.6, 0.6, 0.4, 0.4)
    lost = ExpertFailure("a", 0, "ConnectionError: site offline", FailureKind.ERROR)
    assert list(results.failures) == [lost]
    assert transport.lost == {"a": lost}  # the failure that lost it, kind included
    assert transport.rerouted == {"a": 2}


def test_a_lost_expert_is_not_asked_again():
    experts, transport = _setup(a=True)
    transport.score_round(0, {"a": ScoreRequest(0, (_item("q1"),))})
    transport.score_round(1, {"a": ScoreRequest(1, (_item("q1"),))})
    assert experts["a"].asked == 1  # step 1 went straight to the substitute, without a second timeout
    assert transport.rerouted == {"a": 2}


def test_a_failing_substitute_is_lost_in_turn_and_the_next_one_answers():
    experts, transport = _setup(a=True, b=True)
    results = transport.score_round(0, {"a": ScoreRequest(0, (_item("q1"),))})
    assert results.replies["a"].rewards == (0.6, 0.6)  # a, then b failed; c answered
    assert set(transport.lost) == {"a", "b"}
    assert [f.expert_id for f in results.failures] == ["a", "b"]


def test_with_no_expert_left_the_rewards_stay_missing():
    experts, transport = _setup(a=True, b=True, c=True, d=True)
    results = transport.score_round(0, {"a": ScoreRequest(0, (_item("q1"),))})
    assert "a" not in results.replies  # missing, so NaN in the reward hook: advantage 0
    assert {f.expert_id for f in results.failures} == {"a", "b", "c", "d"}


def test_questions_without_a_free_expert_get_nan_while_the_others_are_rerouted():
    experts, transport = _setup(a=True)
    # q3 has no ranking beyond a: nothing to re-route it to.
    results = transport.score_round(0, {"a": ScoreRequest(0, (_item("q1"), _item("q3")))})
    rewards = results.replies["a"].rewards
    assert rewards[:2] == (0.4, 0.4) and all(math.isnan(r) for r in rewards[2:])


def test_healthy_experts_pass_through_unchanged():
    experts, transport = _setup()
    results = transport.score_round(0, {"a": ScoreRequest(0, (_item("q1"),)), "c": ScoreRequest(0, (_item("q2"),))})
    assert results.replies == {"a": ScoreReply(0, (0.2, 0.2)), "c": ScoreReply(0, (0.6, 0.6))}
    assert not results.failures and transport.lost == {} and transport.rerouted == {}
