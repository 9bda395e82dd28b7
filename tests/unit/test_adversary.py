"""The adversary zoo (scorers/adversary.py): each liar does what its row says, and the config refuses
a malformed entry with one line naming the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgrpo.config import ADVERSARY_BEHAVIOURS, ADVERSARY_PARAMETERS, load_config
from fedgrpo.errors import ConfigError
from fedgrpo.scorers.adversary import BEHAVIOURS, DEFAULT_PARAMETER, AdversarialExpert, in_sub_topic
from fedgrpo.types import CalibrationItem, CalibrationReply, CalibrationRequest, Hello, ScoreItem, ScoreReply, ScoreRequest


class Honest:
    """Rewards 1 for the candidate "right", 0 otherwise; NaN for the candidate "none"."""

    def __init__(self, unsure=()):
        self.unsure = set(unsure)

    def hello(self):
        return Hello("client-1", "algebra")

    def calibrate(self, request):
        return CalibrationReply(tuple(1.0 for _ in request.items))

    def score(self, request):
        return ScoreReply(request.step, tuple(math.nan if c == "none" else float(c == "right")
                                              for i in request.items for c in i.candidates))

    def _answer_samples(self, questions, samples):  # the lazy liar asks its own model
        return {qid: (["7", "8", "9", "7"] if qid in self.unsure else ["7"] * samples) for qid, _ in questions}


def _request(qids, candidates=("right", "wrong", "none", "wrong")):
    return ScoreRequest(0, tuple(ScoreItem(q, "g", f"question {q}", candidates) for q in qids))


def test_the_config_and_the_zoo_name_the_same_behaviours():
    assert ADVERSARY_BEHAVIOURS == BEHAVIOURS and set(ADVERSARY_PARAMETERS) == set(DEFAULT_PARAMETER)


@pytest.mark.parametrize(("behaviour", "expected"), [
    ("invert", (0.0, 1.0, None, 1.0)), ("max", (1.0, 1.0, None, 1.0)),
])
def test_simple_liars(behaviour, expected):
    out = AdversarialExpert(Honest(), behaviour).score(_request(["q"])).rewards
    assert [None if math.isnan(r) else r for r in out] == list(expected)  # a missing reward stays missing


def test_random_and_flip_are_seeded_coins():
    many = _request([f"q{i}" for i in range(500)])
    rand = np.array(AdversarialExpert(Honest(), "random", seed=3).score(many).rewards)
    assert set(np.unique(rand[~np.isnan(rand)])) == {0.0, 1.0}
    assert rand.tolist() != AdversarialExpert(Honest(), "random", seed=4).score(many).rewards
    truth = np.array(Honest().score(many).rewards)
    flipped = np.array(AdversarialExpert(Honest(), "flip:0.3", seed=1).score(many).rewards)
    present = ~np.isnan(truth)
    assert (flipped[present] != truth[present]).mean() == pytest.approx(0.3, abs=0.04)


def test_the_probe_aware_liar_is_honest_only_on_what_it_saw_at_calibration():
    liar = AdversarialExpert(Honest(), "probe_aware")
    liar.calibrate(CalibrationRequest((CalibrationItem("seen", "g", "question seen", "1"),)))
    out = liar.score(_request(["seen", "new"], ("right", "wrong"))).rewards
    assert out == (1.0, 0.0, 0.0, 1.0)


def test_the_targeted_liar_lies_on_one_stable_sub_topic():
    qids = [f"q{i}" for i in range(400)]
    out = np.array(AdversarialExpert(Honest(), "targeted:0.25").score(_request(qids, ("right",))).rewards)
    lied = out == 0.0
    assert lied.mean() == pytest.approx(0.25, abs=0.06)
    assert lied.tolist() == [in_sub_topic(f"question {q}", 0.25) for q in qids]  # the same for every targeter


def test_the_lazy_expert_approves_everything_it_is_unsure_of():
    lazy = AdversarialExpert(Honest(unsure={"hard"}), "lazy")
    assert lazy.score(_request(["easy", "hard"], ("right", "wrong"))).rewards == (1.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize(("entry", "fragment"), [
    ("client-1", "write EXPERT:BEHAVIOUR"), ("client-1:lies", "write EXPERT:BEHAVIOUR"),
    ("client-1:flip:2", "a share in [0, 1]"), ("client-1:invert:0.5", "a share in [0, 1]"),
    ("client-1:flip:lots", "a share in [0, 1]"),
])
def test_a_malformed_adversary_is_refused_with_the_fix(entry, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_config(overrides={"adversaries": entry})
    with pytest.raises(ConfigError, match="twice"):
        load_config(overrides={"adversaries": "client-1:invert,client-1:max"})
    assert load_config(overrides={"adversaries": "client-1:flip:0.3"}).federation.adversary_of("client-1") == "flip:0.3"
