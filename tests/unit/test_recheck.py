"""The dishonest-expert re-check: probes with known answers, one-coin accuracy, exclusion."""

from __future__ import annotations

import math

import pytest

from fedgrpo.scorers.adversary import AdversarialExpert
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.failover import FailoverTransport
from fedgrpo.transport.recheck import FLAGGED, RecheckTransport, build_probes, one_coin_accuracy
from fedgrpo.types import ScoreItem, ScoreReply, ScoreRequest

AUX = [("a1", "basic_arithmetic", "Calculate 1 + 1.", "2"), ("a2", "basic_arithmetic", "Calculate 2 + 2.", "4"),
       ("a3", "basic_arithmetic", "Calculate 3 + 3.", "6")]


class Honest:
    """Rewards a candidate 1 when it holds the right answer of the few questions it knows."""

    KNOWN = {"Calculate 1 + 1.": "2", "Calculate 2 + 2.": "4", "Calculate 3 + 3.": "6", "Q": "7"}

    def __init__(self, name):
        self.name = name

    def hello(self):
        return self.name, "arithmetic"

    def score(self, request):
        return ScoreReply(request.step, tuple(1.0 if c == self.KNOWN.get(i.question) else 0.0
                                              for i in request.items for c in i.candidates))


def _request(step):
    return ScoreRequest(step, (ScoreItem("q", "basic_arithmetic", "Q", ("7", "8")),))


def _setup(behaviour):
    experts = {"honest": Honest("honest"), "liar": AdversarialExpert(Honest("liar"), behaviour, seed=1)}
    probes = build_probes(AUX, {"honest": [True] * 3, "liar": [True] * 3}, completion=lambda a: a)
    recheck = RecheckTransport(EmbeddedTransport(experts, timeout_s=5), probes, every=1, per_check=2, threshold=0.75)
    return recheck, FailoverTransport(recheck, {"q": ("liar", "honest")})


def test_probes_pair_the_gold_answer_with_a_wrong_one_of_the_same_generator():
    probes = build_probes(AUX, {"e": [True, False, True]}, completion=lambda a: a + "</answer>")
    assert [p.item.question_id for p in probes["e"]] == ["a1", "a3"]
    assert probes["e"][0].item.candidates == ("2</answer>", "4</answer>") and probes["e"][0].truth == (1.0, 0.0)


@pytest.mark.parametrize("behaviour", ["invert", "random", "max"])
def test_a_lying_expert_is_flagged_excluded_and_its_questions_rerouted(behaviour):
    recheck, transport = _setup(behaviour)
    for step in range(12):
        results = transport.score_round(step, {"liar": _request(step), "honest": _request(step)})
        # The caller always gets exactly its own candidates back, never the probes.
        assert all(len(r.rewards) == 2 for r in results.replies.values())
    report = recheck.report()
    assert report["liar"]["flagged"] and not report["honest"]["flagged"]
    assert report["honest"]["accuracy"] > 0.9 and report["liar"]["accuracy"] < 0.75
    assert FLAGGED in transport.lost["liar"]
    # After the flag the liar's question is scored by the honest expert, in the liar's place.
    last = transport.score_round(99, {"liar": _request(99)})
    assert last.replies["liar"].rewards == (1.0, 0.0)


def test_honest_experts_under_randomised_response_are_not_flagged():
    import numpy as np

    from fedgrpo.core.privacy import keep_probability, randomized_response

    rng = np.random.default_rng(0)

    class Noisy(Honest):
        def score(self, request):
            clean = np.array(super().score(request).rewards)
            return ScoreReply(request.step, tuple(float(x) for x in randomized_response(clean, 2.0, rng)))

    probes = build_probes(AUX, {"a": [True] * 3, "b": [True] * 3}, completion=lambda a: a)
    recheck = RecheckTransport(EmbeddedTransport({"a": Noisy("a"), "b": AdversarialExpert(Noisy("b"), "invert")},
                                                 timeout_s=5), probes, every=1, per_check=3, threshold=0.75,
                               keep=keep_probability(2.0))
    for step in range(30):
        recheck.score_round(step, {"a": _request(step), "b": _request(step)})
    assert not recheck.report()["a"]["flagged"] and recheck.report()["b"]["flagged"]


def test_one_coin_accuracy_starts_at_its_prior_and_follows_the_evidence():
    assert one_coin_accuracy(0, 0) == pytest.approx(2 / 3)
    assert one_coin_accuracy(100, 100) > 0.97 and one_coin_accuracy(0, 100) < 0.03
    assert math.isclose(one_coin_accuracy(5, 10), 7 / 13)
