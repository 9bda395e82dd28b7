"""The dishonest-expert re-check: probes that arrive among an expert's real items, judged per distinct
answer where a block holds a right and a wrong one; spot checks by a second expert; the one-coin
Dawid-Skene reading (`core.rater`, tested in tests/unit/test_rater.py); exclusion (a failure of kind
FLAGGED) or correction; its journal for resumed runs. That a probe cannot be told from a real
question: tests/unit/test_probe_indistinguishable.py.

Run: pytest tests/unit/test_recheck.py
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from fedgrpo.data.tasks import Question
from fedgrpo.scorers.adversary import AdversarialExpert
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.failover import FailoverTransport
from fedgrpo.transport.recheck import (
    CORRECTED,
    EXCLUDED,
    FLAGGED,
    ProbeBook,
    RecheckTransport,
    answer_labels,
    draw,
)
from fedgrpo.types import FailureKind, Hello, ScoreItem, ScoreReply, ScoreRequest

PROBES = {f"p{i}": Question(f"p{i}", "arithmetic", "basic_arithmetic", f"Calculate {i} + {i}.", str(2 * i))
          for i in range(1, 7)}
BOOK = ProbeBook(PROBES, extract=lambda c: c or None, is_right=lambda q, a: a == q.answer)


class Honest:
    """Rewards a candidate 1 when it is the right answer of a question it knows (every one here)."""

    KNOWN: ClassVar[dict[str, str]] = {"Q": "7", **{q.question: q.answer for q in PROBES.values()}}

    def __init__(self, name):
        self.name = name
        self.requests: list[ScoreRequest] = []

    def hello(self):
        return Hello(self.name, "arithmetic")

    def score(self, request):
        self.requests.append(request)
        return ScoreReply(request.step, tuple(1.0 if c == self.KNOWN.get(i.question) else 0.0
                                              for i in request.items for c in i.candidates))


def _probe(i):
    q = PROBES[f"p{i}"]
    return ScoreItem(q.question_id, q.generator, q.question, (q.answer, str(2 * i + 1)))


def _request(step, probes=2):
    """One real question and `probes` probe blocks (one right and one wrong answer each), as the
    reward hook asks: the probes are items like any other."""
    real = ScoreItem("q", "basic_arithmetic", "Q", ("7", "8"))
    return ScoreRequest(step, (real, *(_probe((step * probes + k) % len(PROBES) + 1) for k in range(probes))))


def _setup(behaviour, correct_inverted=False, journal=None, liar=None, spot_share=0.0):
    experts = {"honest": Honest("honest"), "liar": liar or AdversarialExpert(Honest("liar"), behaviour, seed=1)}
    # Both competent for every question: each is judged everywhere and may spot-check the other.
    competent = {q: ("liar", "honest") for q in ("q", *PROBES)}
    recheck = RecheckTransport(EmbeddedTransport(experts, timeout_s=5), BOOK, threshold=0.7, competent=competent,
                               spot_share=spot_share, seed=3, correct_inverted=correct_inverted, journal=journal)
    return recheck, FailoverTransport(recheck, {"q": ("liar", "honest"), **{p: ("liar", "honest") for p in PROBES}})


def test_a_probe_block_is_judged_per_distinct_answer_and_only_with_a_right_and_a_wrong_one():
    labels, truths = BOOK.evidence(ScoreItem("p1", "g", "Calculate 1 + 1.", ("2", "2", "3", "")), (1.0, 1.0, 0.0, 0.0))
    assert truths.tolist() == [1.0, 0.0, 0.0] and labels.tolist() == [1.0, 0.0, 0.0]  # "2" counted once; no answer: wrong
    assert BOOK.evidence(ScoreItem("p1", "g", "Calculate 1 + 1.", ("2", "2")), (1.0, 1.0)) is None  # all right
    assert BOOK.evidence(ScoreItem("p1", "g", "Calculate 1 + 1.", ("5", "3")), (0.0, 0.0)) is None  # all wrong
    assert BOOK.evidence(ScoreItem("q", "g", "Q", ("7", "8")), (1.0, 0.0)) is None  # not a probe


def test_an_answers_label_is_the_side_of_its_candidates_mean_reward():
    answers, labels = answer_labels(["5", "7", "5", None, "9"], [1.0, 0.0, 0.0, np.nan, 0.75])
    assert answers == ["5", "7", None, "9"]
    # "5": mean 1/2, no side (a form that released one value per answer never splits it this way).
    assert np.isnan(labels[0]) and labels[1] == 0.0 and np.isnan(labels[2]) and labels[3] == 1.0


@pytest.mark.parametrize("behaviour", ["invert", "random", "max"])
def test_a_lying_expert_is_flagged_and_excluded_and_its_questions_rerouted(behaviour):
    recheck, transport = _setup(behaviour)
    for step in range(30):
        results = transport.score_round(step, {"liar": _request(step), "honest": _request(step)})
        # The caller always gets exactly its own candidates back.
        assert all(len(r.rewards) == 6 for r in results.replies.values())
    report = recheck.report()
    assert report["liar"]["flagged"] and not report["honest"]["flagged"]
    assert report["honest"]["accuracy"] > 0.9 and report["liar"]["accuracy"] < 0.7
    assert report["liar"]["response"] == EXCLUDED and report["honest"]["response"] is None
    # Lost for being flagged: the kind says so (code switches on it), the reason says it to people.
    assert transport.lost["liar"].kind is FailureKind.FLAGGED
    assert transport.lost["liar"].reason.startswith(FLAGGED)
    # After the flag the liar's questions are scored by the honest expert, in the liar's place.
    last = transport.score_round(99, {"liar": _request(99)})
    assert last.replies["liar"].rewards == (1.0, 0.0) * 3


def test_an_inverting_expert_is_caught_in_its_first_rounds_and_its_rewards_corrected():
    # Two probe values per round: after 6 values all wrong, P(accuracy < 0.7) = 0.9987 >= 0.99.
    recheck, transport = _setup("invert", correct_inverted=True)
    rewards = [transport.score_round(step, {"liar": _request(step, probes=1)}).replies["liar"].rewards
               for step in range(6)]
    report = recheck.report()["liar"]
    assert report["flagged_at_step"] == 2 and report["response"] == CORRECTED and report["probe_groups"] == 6
    assert rewards[:2] == [(0.0, 1.0, 0.0, 1.0)] * 2  # before the evidence: its inverted rewards
    assert rewards[2:] == [(1.0, 0.0, 1.0, 0.0)] * 4  # its reply of that very round on, corrected
    assert not transport.lost


def test_an_always_one_expert_is_excluded_not_corrected():
    recheck, transport = _setup("max", correct_inverted=True)
    for step in range(30):
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
    for step in range(60):
        transport.score_round(step, {"liar": _request(step), "honest": _request(step)})
        if recheck.report()["liar"]["response"] == EXCLUDED:
            break
    report = recheck.report()["liar"]
    assert report["response"] == EXCLUDED and report["flagged_at_step"] == 1  # corrected at step 1 first
    assert transport.lost["liar"].kind is FailureKind.FLAGGED


def test_honest_experts_under_randomised_response_are_not_flagged_and_an_inverting_one_is():
    from fedgrpo.privacy.mechanisms import RandomizedResponse, keep_probability

    rng = np.random.default_rng(1)  # one fixed draw of the noise

    class Noisy(Honest):
        def score(self, request):
            clean = np.array(super().score(request).rewards)
            noisy = RandomizedResponse(2.0).release(clean, rng.random((len(clean), 2)))
            return ScoreReply(request.step, tuple(float(x) for x in noisy))

    recheck = RecheckTransport(EmbeddedTransport({"a": Noisy("a"), "b": AdversarialExpert(Noisy("b"), "invert")},
                                                 timeout_s=5), BOOK, threshold=0.7, keep=keep_probability(2.0))
    for step in range(30):
        recheck.score_round(step, {"a": _request(step), "b": _request(step)})
    assert not recheck.report()["a"]["flagged"] and recheck.report()["b"]["flagged"]


def test_the_journal_restores_the_state_at_a_checkpoint_and_drops_later_rounds(tmp_path):
    journal = tmp_path / "recheck.jsonl"

    def rounds(transport, steps):
        return [transport.score_round(s, {"liar": _request(s, probes=1), "honest": _request(s, probes=1)})
                for s in steps]

    whole, whole_t = _setup("invert", correct_inverted=True, journal=tmp_path / "whole.jsonl", spot_share=0.5)
    whole.resume(None)
    expected = rounds(whole_t, range(10))
    first, first_t = _setup("invert", correct_inverted=True, journal=journal, spot_share=0.5)
    first.resume(None)
    rounds(first_t, range(7))
    with journal.open("a") as f:
        f.write('{"step": 7, "che')  # a line a kill cut short
    resumed, resumed_t = _setup("invert", correct_inverted=True, journal=journal, spot_share=0.5)
    resumed.resume(5)  # the checkpoint is at step 5: rounds 5 and 6 are redone
    assert [json.loads(x)["step"] for x in journal.read_text().splitlines()] == [4]
    assert rounds(resumed_t, range(5, 10)) == expected[5:]
    assert resumed.report() == whole.report() and resumed.pairs == whole.pairs
    fresh, _ = _setup("invert", journal=journal)
    fresh.resume(None)  # a fresh run starts an empty journal
    assert journal.read_text() == "" and fresh.report()["liar"]["probe_values"] == 0


def test_a_spot_check_goes_to_the_next_competent_expert_among_its_items_and_trains_nothing():
    # Every block of a's is also put to b (share 1): b sees it as one more item of its request; the
    # caller gets each expert's own rewards only.
    a, b = Honest("a"), Honest("b")
    recheck = RecheckTransport(EmbeddedTransport({"a": a, "b": b}, timeout_s=5), BOOK, threshold=0.7,
                               competent={"q": ("a", "b"), "r": ("b", "a")}, spot_share=1.0)
    own_b = ScoreRequest(0, (ScoreItem("r", "basic_arithmetic", "R", ("1", "2")),))
    results = recheck.score_round(0, {"a": _request(0, probes=0), "b": own_b})
    assert results.replies["a"].rewards == (1.0, 0.0) and results.replies["b"].rewards == (0.0, 0.0)
    sent_to_b = [i.question_id for i in b.requests[0].items]
    assert sorted(sent_to_b) == ["q", "r"]  # its own item and a's block, in a drawn order
    sent_to_a = [i.question_id for i in a.requests[0].items]
    assert sorted(sent_to_a) == ["q", "r"]  # and b's block went to a, the next competent one for "r"
    report = recheck.report()
    assert report["a"]["spot_items"] == report["b"]["spot_items"] == 1
    assert report["a"]["spot_values"] == report["b"]["spot_values"] == 4  # two answers of "q", two of "r"
    assert recheck.pairs == {"a|b": [[1.0, 0.0], [0.0, 1.0]], "b|a": [[2.0, 0.0], [0.0, 0.0]]}


def test_no_spot_check_without_a_second_competent_expert_asked_in_the_round():
    a = Honest("a")
    recheck = RecheckTransport(EmbeddedTransport({"a": a, "b": Honest("b")}, timeout_s=5), BOOK, threshold=0.7,
                               competent={"q": ("a", "b")}, spot_share=1.0)
    recheck.score_round(0, {"a": _request(0, probes=0)})  # b is not asked this round: nothing to hide among
    assert [i.question_id for i in a.requests[0].items] == ["q"] and recheck.pairs == {}


def test_spot_checks_catch_a_liar_that_meets_no_probe():
    # The liar's blocks are never probes; an anchored honest expert checks them: Dawid-Skene reads
    # their disagreements against the liar, so the evidence no longer rests on probes alone.
    honest = Honest("honest")
    liar = AdversarialExpert(Honest("liar"), "invert")
    competent = {"q": ("liar", "honest"), **{p: ("honest",) for p in PROBES}}  # the liar never scores a probe
    recheck = RecheckTransport(EmbeddedTransport({"honest": honest, "liar": liar}, timeout_s=5), BOOK,
                               threshold=0.7, competent=competent, spot_share=1.0)
    for step in range(10):
        recheck.score_round(step, {"liar": _request(step, probes=0), "honest": _request(step, probes=2)})
    report = recheck.report()
    assert report["liar"]["probe_values"] == 0 and report["liar"]["spot_values"] > 0
    assert report["liar"]["flagged"] and not report["honest"]["flagged"]


def test_spot_check_draws_are_fixed_by_their_arguments_and_hit_the_share():
    assert draw(0, 3, "a", "q", "spot") == draw(0, 3, "a", "q", "spot") != draw(0, 4, "a", "q", "spot")
    hits = sum(draw(0, step, "a", f"q{i}", "spot") < 0.05 for step in range(50) for i in range(40))
    assert abs(hits / 2000 - 0.05) < 3 * (0.05 * 0.95 / 2000) ** 0.5 * 2  # within the binomial spread


def test_peer_agreement_on_shared_candidates_is_reported_but_flags_nobody():
    # Four experts score the same candidates (score_replication) of a question that is no probe:
    # only their agreement with each other is evidence, and an inverting one is reported, not flagged.
    experts = {f"e{i}": Honest(f"e{i}") for i in range(3)} | {"liar": AdversarialExpert(Honest("liar"), "invert")}
    recheck = RecheckTransport(EmbeddedTransport(experts, timeout_s=5), BOOK, threshold=0.7)
    for step in range(3):
        results = recheck.score_round(step, {e: _request(step, probes=0) for e in experts})
        assert len(results.replies) == 4 and not results.failures
    report = recheck.report()
    assert [report[e]["peer_agreed"] for e in experts] == [6, 6, 6, 0]
    assert all(report[e]["peer_values"] == 6 and not report[e]["flagged"] for e in experts)


def test_disagreeing_experts_neither_proven_on_probes_flag_neither():
    # Without anchors, "a right and b wrong" and the reverse explain the pairs equally well: the pairs
    # are kept, and count once one of them proves itself on probes.
    liar = AdversarialExpert(Honest("liar"), "invert")
    competent = {"q": ("liar", "honest"), **{p: ("honest",) for p in PROBES}}  # the liar never scores a probe
    recheck = RecheckTransport(EmbeddedTransport({"honest": Honest("honest"), "liar": liar}, timeout_s=5), BOOK,
                               threshold=0.7, competent=competent, spot_share=1.0)
    for step in range(20):
        recheck.score_round(step, {"liar": _request(step, probes=0), "honest": _request(step, probes=0)})
    report = recheck.report()
    assert report["liar"]["spot_values"] == report["honest"]["spot_values"] == 80
    assert not report["liar"]["flagged"] and not report["honest"]["flagged"]
    for step in range(20, 30):  # now the honest one meets probes, and vouches against the liar
        recheck.score_round(step, {"liar": _request(step, probes=0), "honest": _request(step, probes=2)})
    report = recheck.report()
    assert report["liar"]["flagged"] and report["liar"]["probe_values"] == 0 and not report["honest"]["flagged"]


def test_an_expert_is_judged_only_where_the_routing_trusts_it():
    # A substitute scoring questions outside its competence (after a failure, say) answers as a
    # non-expert does: its mistakes there are no evidence of lying.
    outsider = AdversarialExpert(Honest("outsider"), "invert")
    recheck = RecheckTransport(EmbeddedTransport({"outsider": outsider}, timeout_s=5), BOOK, threshold=0.7,
                               competent={p: ("expert",) for p in PROBES})
    for step in range(10):
        recheck.score_round(step, {"outsider": _request(step)})
    assert recheck.report()["outsider"]["probe_values"] == 0 and not recheck.report()["outsider"]["flagged"]
