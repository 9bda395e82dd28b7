"""The dishonest-expert re-check: probes with known answers, one-coin accuracy (`core.rater`, tested in
tests/unit/test_rater.py), exclusion (a failure of kind FLAGGED) or correction, its journal for
resumed runs."""

from __future__ import annotations

import json

import pytest

from fedgrpo.scorers.adversary import AdversarialExpert
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.failover import FailoverTransport
from fedgrpo.transport.recheck import (
    CORRECTED,
    EXCLUDED,
    FLAGGED,
    RecheckTransport,
    build_probes,
)
from fedgrpo.types import FailureKind, Hello, ScoreItem, ScoreReply, ScoreRequest

AUX = [("a1", "basic_arithmetic", "Calculate 1 + 1.", "2"), ("a2", "basic_arithmetic", "Calculate 2 + 2.", "4"),
       ("a3", "basic_arithmetic", "Calculate 3 + 3.", "6")]


class Honest:
    """Rewards a candidate 1 when it holds the right answer of the few questions it knows."""

    KNOWN = {"Calculate 1 + 1.": "2", "Calculate 2 + 2.": "4", "Calculate 3 + 3.": "6", "Q": "7"}

    def __init__(self, name):
        self.name = name

    def hello(self):
        return Hello(self.name, "arithmetic")

    def score(self, request):
        return ScoreReply(request.step, tuple(1.0 if c == self.KNOWN.get(i.question) else 0.0
                                              for i in request.items for c in i.candidates))


def _request(step):
    return ScoreRequest(step, (ScoreItem("q", "basic_arithmetic", "Q", ("7", "8")),))


def _setup(behaviour, every=1, correct_inverted=False, journal=None, liar=None):
    experts = {"honest": Honest("honest"), "liar": liar or AdversarialExpert(Honest("liar"), behaviour, seed=1)}
    probes = build_probes(AUX, {"honest": [True] * 3, "liar": [True] * 3}, completion=lambda a: a)
    recheck = RecheckTransport(EmbeddedTransport(experts, timeout_s=5), probes, every=every, per_check=2,
                               threshold=0.75, correct_inverted=correct_inverted, journal=journal)
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
    assert report["liar"]["response"] == EXCLUDED and report["honest"]["response"] is None
    # Lost for being flagged: the kind says so (code switches on it), the reason says it to people.
    assert transport.lost["liar"].kind is FailureKind.FLAGGED
    assert transport.lost["liar"].reason.startswith(FLAGGED)
    # After the flag the liar's question is scored by the honest expert, in the liar's place.
    last = transport.score_round(99, {"liar": _request(99)})
    assert last.replies["liar"].rewards == (1.0, 0.0)


def test_honest_experts_under_randomised_response_are_not_flagged():
    import numpy as np

    from fedgrpo.privacy.mechanisms import RandomizedResponse, keep_probability

    # One fixed draw of the noise. Not every draw passes: over 40 seeds the honest expert was flagged
    # 3 times after 12 probe values at epsilon 2 (the re-check's false-flag rate under noise).
    rng = np.random.default_rng(1)

    class Noisy(Honest):
        def score(self, request):
            clean = np.array(super().score(request).rewards)
            noisy = RandomizedResponse(2.0).release(clean, rng.random((len(clean), 2)))
            return ScoreReply(request.step, tuple(float(x) for x in noisy))

    probes = build_probes(AUX, {"a": [True] * 3, "b": [True] * 3}, completion=lambda a: a)
    recheck = RecheckTransport(EmbeddedTransport({"a": Noisy("a"), "b": AdversarialExpert(Noisy("b"), "invert")},
                                                 timeout_s=5), probes, every=1, per_check=3, threshold=0.75,
                               keep=keep_probability(2.0))
    for step in range(30):
        recheck.score_round(step, {"a": _request(step), "b": _request(step)})
    assert not recheck.report()["a"]["flagged"] and recheck.report()["b"]["flagged"]


def test_an_inverting_expert_is_caught_in_its_first_rounds_and_its_rewards_corrected():
    # every=50, 2 probe items (4 values) per re-check: its first request still carries 4 items (8
    # values, min_values), so its first reply is judged before its rewards are used. Only 3 items
    # exist: the fourth value pair waits for round 2 (probed every round until it has 8 values).
    recheck, transport = _setup("invert", every=50, correct_inverted=True)
    rewards = [transport.score_round(step, {"liar": _request(step)}).replies["liar"].rewards for step in range(6)]
    report = recheck.report()["liar"]
    assert report["flagged_at_step"] == 1 and report["response"] == CORRECTED and report["probe_values"] == 10
    assert rewards[0] == (0.0, 1.0)  # before the evidence: its inverted rewards
    assert rewards[1:] == [(1.0, 0.0)] * 5  # its reply of that very round on, corrected
    assert not transport.lost


@pytest.mark.parametrize("behaviour", ["random", "max"])
def test_random_or_always_one_rewards_are_excluded_not_corrected(behaviour):
    recheck, transport = _setup(behaviour, correct_inverted=True)
    for step in range(12):
        transport.score_round(step, {"liar": _request(step), "honest": _request(step)})
    assert recheck.report()["liar"]["response"] == EXCLUDED
    assert transport.lost["liar"].kind is FailureKind.FLAGGED


class Switching(Honest):
    """Inverts its rewards for its first `rounds` replies, then answers honestly."""

    def __init__(self, name, rounds):
        super().__init__(name)
        self.left = rounds

    def score(self, request):
        reply = super().score(request)
        self.left -= 1
        return ScoreReply(reply.step, tuple(1.0 - r for r in reply.rewards)) if self.left >= 0 else reply


def test_a_corrected_expert_that_stops_inverting_is_excluded():
    recheck, transport = _setup(None, correct_inverted=True, liar=Switching("liar", rounds=4))
    for step in range(30):
        transport.score_round(step, {"liar": _request(step), "honest": _request(step)})
        if recheck.report()["liar"]["response"] == EXCLUDED:
            break
    report = recheck.report()["liar"]
    assert report["response"] == EXCLUDED and report["flagged_at_step"] == 1
    assert transport.lost["liar"].kind is FailureKind.FLAGGED


def test_the_journal_restores_the_state_at_a_checkpoint_and_drops_later_rounds(tmp_path):
    journal = tmp_path / "recheck.jsonl"

    def rounds(recheck, transport, steps):
        return [transport.score_round(s, {"liar": _request(s), "honest": _request(s)}) for s in steps]

    whole, whole_t = _setup("invert", every=3, correct_inverted=True, journal=tmp_path / "whole.jsonl")
    whole.resume(None)
    expected = rounds(whole, whole_t, range(10))
    first, first_t = _setup("invert", every=3, correct_inverted=True, journal=journal)
    first.resume(None)
    rounds(first, first_t, range(7))
    with journal.open("a") as f:
        f.write('{"step": 7, "rou')  # a line a kill cut short
    resumed, resumed_t = _setup("invert", every=3, correct_inverted=True, journal=journal)
    resumed.resume(5)  # the checkpoint is at step 5: rounds 5 and 6 are redone
    assert [json.loads(x)["step"] for x in journal.read_text().splitlines()] == [4]
    assert rounds(resumed, resumed_t, range(5, 10)) == expected[5:]
    assert resumed.report() == whole.report()
    fresh, _ = _setup("invert", journal=journal)
    fresh.resume(None)  # a fresh run starts an empty journal
    assert journal.read_text() == "" and fresh.report()["liar"]["probe_values"] == 0


def test_with_enough_probe_items_a_liar_is_judged_on_its_first_reply():
    aux = [(f"a{i}", "basic_arithmetic", f"Calculate {i} + {i}.", str(2 * i)) for i in range(1, 6)]

    class Knows(Honest):
        KNOWN = {**Honest.KNOWN, **{q: a for _, _, q, a in aux}}

    probes = build_probes(aux, {"liar": [True] * 5}, completion=lambda a: a)
    recheck = RecheckTransport(EmbeddedTransport({"liar": AdversarialExpert(Knows("liar"), "invert")}, timeout_s=5),
                               probes, every=50, per_check=1, threshold=0.75)
    first = recheck.score_round(0, {"liar": _request(0)})
    assert first.replies["liar"].rewards == (1.0, 0.0)
    assert recheck.report()["liar"]["probe_values"] == 8 and recheck.report()["liar"]["flagged_at_step"] == 0
    recheck.score_round(1, {"liar": _request(1)})
    assert recheck.report()["liar"]["probe_values"] == 8  # proven: next probes at round 50


def test_peer_agreement_on_shared_candidates_is_reported_but_flags_nobody():
    # Four experts score the same candidates (score_replication); none claimed a probe item, so only
    # their agreement with each other is evidence, and an inverting one is reported, not flagged.
    experts = {f"e{i}": Honest(f"e{i}") for i in range(3)} | {"liar": AdversarialExpert(Honest("liar"), "invert")}
    recheck = RecheckTransport(EmbeddedTransport(experts, timeout_s=5), {}, every=1, per_check=2, threshold=0.75)
    for step in range(3):
        results = recheck.score_round(step, {e: _request(step) for e in experts})
        assert len(results.replies) == 4 and not results.failures
    report = recheck.report()
    assert [report[e]["peer_agreed"] for e in experts] == [6, 6, 6, 0]
    assert all(report[e]["peer_values"] == 6 and not report[e]["flagged"] for e in experts)
