"""The privacy room's maths: mechanisms against their definitions, accounting against dp-accounting
composed one event at a time, the client's journal and budget across restarts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event, privacy_accountant
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.config import LDP_MECHANISMS as CONFIG_MECHANISMS
from fedgrpo.data.prompts import PREFILL
from fedgrpo.privacy.accounting import (
    default_delta,
    gaussian_epsilon,
    gaussian_noise_multiplier,
    max_values,
    values_epsilon,
)
from fedgrpo.privacy.client import (
    SCORE_ANSWER,
    ClientPrivacy,
    PrivacyBudgetSpent,
    PrivateExpert,
    value_key,
)
from fedgrpo.privacy.mechanisms import (
    VALUE_MECHANISMS,
    BoundedLaplace,
    LabelRandomizedResponse,
    RandomizedResponse,
    gaussian_histogram,
    keep_probability,
    sign_fidelity,
)
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.types import (
    NO_ANSWER,
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    Hello,
    Reads,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
)

# --- Gaussian releases (DPSDA-FL) ----------------------------------------------------------------------


def _rdp_epsilon(multiplier: float, releases: int, delta: float) -> float:
    """dp-accounting's own epsilon for `releases` Gaussian releases, composed one by one."""
    accountant = rdp_privacy_accountant.RdpAccountant()
    for _ in range(releases):
        accountant.compose(dp_event.GaussianDpEvent(multiplier))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(("epsilon", "delta", "releases"), [(1.0, 1e-5, 11), (4.0, 1.45e-4, 5), (8.0, 3e-6, 1)])
def test_gaussian_noise_multiplier_spends_exactly_the_budget(epsilon, delta, releases):
    m = gaussian_noise_multiplier(epsilon, delta, releases)
    assert _rdp_epsilon(m, releases, delta) == pytest.approx(epsilon, rel=2e-3)
    assert _rdp_epsilon(0.98 * m, releases, delta) > epsilon  # any less noise overspends
    assert gaussian_epsilon(m, releases, delta) == pytest.approx(_rdp_epsilon(m, releases, delta), rel=1e-9)


def test_bad_gaussian_parameters_are_refused():
    for args in ((0.0, 1e-5, 1), (1.0, 0.0, 1), (1.0, 1.0, 1), (1.0, 1e-5, 0)):
        with pytest.raises(ValueError):
            gaussian_noise_multiplier(*args)


def test_default_delta_is_pe_choice():
    assert default_delta(1000) == pytest.approx(1 / (1000 * math.log(1000)))


def test_gaussian_histogram_noise_has_the_calibrated_scale():
    rng = np.random.default_rng(0)
    noisy = gaussian_histogram(np.zeros(200_000), sigma=2.5, threshold=-np.inf, rng=rng)
    assert noisy.std() == pytest.approx(2.5, rel=0.01)
    assert abs(noisy.mean()) < 0.02
    kept = gaussian_histogram(np.array([10.0, 0.0, 5.0]), sigma=0.0, threshold=6.0, rng=rng)
    assert kept.tolist() == [10.0, 0.0, 0.0]


# --- per-value mechanisms --------------------------------------------------------------------------------

def test_the_config_names_the_same_mechanisms():
    assert tuple(VALUE_MECHANISMS) == CONFIG_MECHANISMS


def test_randomized_response_flips_at_the_calibrated_rate_and_debiasing_is_unbiased():
    rng = np.random.default_rng(0)
    truth = (rng.random(200_000) < 0.3).astype(float)
    rr = RandomizedResponse(1.0)
    noisy = rr.release(truth, rng.random((len(truth), 2)))
    assert set(np.unique(noisy)) == {0.0, 1.0}
    assert (noisy != truth).mean() == pytest.approx(1 - keep_probability(1.0), abs=0.005)
    assert rr.debias(noisy).mean() == pytest.approx(truth.mean(), abs=0.01)


def test_a_missing_value_is_released_like_a_fair_one_so_nan_tells_nothing():
    rng = np.random.default_rng(1)
    rr = RandomizedResponse(2.0)
    out = rr.release(np.full(100_000, np.nan), rng.random((100_000, 2)))
    assert not np.isnan(out).any()
    assert out.mean() == pytest.approx(0.5, abs=0.01)
    # The definition: P(out = 1 | missing) / P(out = 1 | value v) stays within e^eps for both values.
    p_missing = 0.5
    for p_value in (keep_probability(2.0), 1 - keep_probability(2.0)):
        assert max(p_missing / p_value, p_value / p_missing) <= math.exp(2.0) + 1e-12


def test_randomized_response_refuses_real_values():
    with pytest.raises(ValueError, match="0/1"):
        RandomizedResponse(1.0).release(np.array([0.5]), np.zeros((1, 2)))


def test_bounded_laplace_has_the_stated_scale_and_stays_in_range():
    rng = np.random.default_rng(2)
    lap = BoundedLaplace(40.0)  # small noise: almost never clipped around 0.5
    out = lap.release(np.full(200_000, 0.5), rng.random((200_000, 2)))
    assert (out - 0.5).std() == pytest.approx(math.sqrt(2) / 40.0, rel=0.02)  # Laplace(b) has std b sqrt 2
    wide = BoundedLaplace(0.5).release(np.array([0.0, 1.0, np.nan] * 1000), rng.random((3000, 2)))
    assert wide.min() >= 0.0 and wide.max() <= 1.0 and not np.isnan(wide).any()


def _label_distribution(mech: LabelRandomizedResponse, label: str, prior: dict[str, float]) -> dict[str, float]:
    """RRWithPrior's output probabilities, written out from the paper (the slow reference)."""
    top = mech.top_k(prior)
    e, k = math.exp(mech.epsilon), len(top)
    if label in top:
        return {a: (e if a == label else 1.0) / (e + k - 1) for a in top}
    return {a: 1.0 / k for a in top}


@settings(max_examples=60, deadline=None)
@given(st.floats(0.1, 6.0), st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 20), min_size=1, max_size=8))
def test_label_rr_with_prior_is_epsilon_label_dp(epsilon, counts):
    mech = LabelRandomizedResponse(epsilon)
    prior = {a: float(n) for a, n in counts.items()}
    labels = list("abcdefghz")  # z: a label the prior does not know
    dists = {y: _label_distribution(mech, y, prior) for y in labels}
    outputs = set().union(*dists.values())
    for y in labels:
        for y2 in labels:
            for out in outputs:
                p, q = dists[y].get(out, 0.0), dists[y2].get(out, 0.0)
                assert (p == 0) == (q == 0)  # the same support whatever the label
                if p:
                    assert p / q <= math.exp(epsilon) * (1 + 1e-9)


def test_label_rr_with_prior_samples_its_stated_distribution_and_picks_the_best_k():
    mech = LabelRandomizedResponse(1.0)
    prior = {"12": 8.0, "13": 5.0, "21": 2.0, "7": 1.0}
    top = mech.top_k(prior)
    # k maximises (mass of the top k) e^eps / (e^eps + k - 1), brute force over k:
    ranked = sorted(prior, key=lambda a: -prior[a])
    e = math.e
    scores = [sum(prior[a] for a in ranked[:k]) / 16 * e / (e + k - 1) for k in range(1, 5)]
    assert len(top) == 1 + int(np.argmax(scores))
    rng = np.random.default_rng(3)
    draws = [mech.release("13", prior, rng.random(2)) for _ in range(20_000)]
    expected = _label_distribution(mech, "13", prior)
    for answer, p in expected.items():
        assert draws.count(answer) / len(draws) == pytest.approx(p, abs=0.015)
    assert mech.release("13", {}, rng.random(2)) is None  # no prior: nothing to answer among


# --- accounting --------------------------------------------------------------------------------------------

def _composed_by_the_accountant(k: int, epsilon: float, delta: float) -> float:
    """k randomised-response releases composed one by one by dp-accounting's PLD accountant."""
    accountant = pld_privacy_accountant.PLDAccountant(privacy_accountant.NeighboringRelation.REPLACE_ONE,
                                                      value_discretization_interval=epsilon / 1000)
    for _ in range(k):
        accountant.compose(dp_event.RandomizedResponseDpEvent(2 * (1 - keep_probability(epsilon)), 2))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(("k", "epsilon"), [(1, 1.0), (3, 1.0), (40, 1.0), (200, 0.05)])
def test_values_epsilon_is_the_accountants_composition(k, epsilon):
    rr = RandomizedResponse(epsilon)
    fine = _composed_by_the_accountant(k, epsilon, 1e-5)  # a ten times finer discretisation
    assert fine - 1e-9 <= values_epsilon({rr: k}, 1e-5) <= 1.03 * fine  # pessimistic, and by at most 3%
    assert values_epsilon({rr: k}, 1e-5) <= k * epsilon + 1e-9  # never above basic composition


def test_small_epsilons_are_not_overstated_by_a_coarse_discretisation():
    # 19,000 values at 0.01 each compose to about 7.3 (shared/design/privacy.md); a fixed 1e-2
    # interval said 98 and stopped budgeted clients early.
    assert values_epsilon({RandomizedResponse(0.01): 19_000}, 1e-5) == pytest.approx(7.3, abs=0.15)


def test_mechanisms_compose_each_under_its_own_loss():
    rr, lap = RandomizedResponse(1.0), BoundedLaplace(1.0)
    both = values_epsilon({rr: 50, lap: 50}, 1e-5)
    # Randomised response loses exactly eps on every value, Laplace at most eps: counting calibration
    # bits (RR) as Laplace releases would under-state what a client spent.
    assert values_epsilon({lap: 100}, 1e-5) < both < values_epsilon({rr: 100}, 1e-5)


def test_max_values_is_the_last_count_within_budget_beside_other_releases():
    rr, lap = RandomizedResponse(1.0), BoundedLaplace(0.5)
    for already in ({}, {rr: 10}):
        n = max_values(lap, already, 20.0, 1e-5)
        assert values_epsilon({**already, lap: n}, 1e-5) <= 20.0 < values_epsilon({**already, lap: n + 1}, 1e-5)
    assert max_values(rr, {}, 0.5, 1e-5) == 0


def test_sign_fidelity():
    assert sign_fidelity(np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0, 0.0])) == 1.0
    assert sign_fidelity(np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0])) == 0.5
    assert sign_fidelity(np.array([1.0, 1.0]), np.array([0.0, 1.0])) is None  # no signal to preserve


# --- the client's state: secret, journal, budget ------------------------------------------------------------

def _client(path: Path, budget: float | None = None, epsilon: float = 1.0) -> ClientPrivacy:
    return ClientPrivacy(path, values=RandomizedResponse(epsilon), calibration=RandomizedResponse(epsilon),
                         budget=budget)


def test_a_value_asked_again_is_the_same_release_and_costs_nothing(tmp_path):
    client = _client(tmp_path)
    keys = [f"k{i}" for i in range(50)]
    first = client.release("score", keys, np.ones(50))
    again = client.release("score", keys[::-1], np.ones(50))
    assert again.tolist() == first[::-1].tolist()
    assert client.spent()["released"] == {"randomized_response": 50}
    assert (first == 0).any()  # some flipped at epsilon 1 (p = 0.27 each)


def test_noise_is_never_reused_on_new_values(tmp_path):
    client = _client(tmp_path, epsilon=0.5)
    flips_a = client.release("score", [f"a{i}" for i in range(2000)], np.ones(2000)) == 0
    flips_b = client.release("score", [f"b{i}" for i in range(2000)], np.ones(2000)) == 0
    assert 0.3 < flips_a.mean() < 0.45 and 0.3 < flips_b.mean() < 0.45
    assert (flips_a == flips_b).mean() < 0.65  # independent draws agree about 0.53 of the time, not 1


def test_the_journal_survives_a_restart_and_a_cut_short_line(tmp_path):
    client = _client(tmp_path)
    out = client.release("score", ["x", "y", "z"], np.array([1.0, 0.0, 1.0]))
    with (tmp_path / "releases.jsonl").open("a") as fh:
        fh.write('["score", "w", 0.')  # a kill while writing a value that never left
    again = _client(tmp_path)
    assert again.spent()["released"] == {"randomized_response": 3}
    assert again.release("score", ["z", "y", "x"], np.array([1.0, 0.0, 1.0])).tolist() == out[::-1].tolist()
    assert again.secret.uniforms(4, "t").tolist() == client.secret.uniforms(4, "t").tolist()  # the same secret


def test_a_budgeted_client_stops_exactly_before_its_budget_across_a_restart(tmp_path):
    limit = max_values(RandomizedResponse(1.0), {}, 10.0, 1e-5)
    client = _client(tmp_path, budget=10.0)
    client.release("score", [f"k{i}" for i in range(limit - 3)], np.ones(limit - 3))
    restarted = _client(tmp_path, budget=10.0)  # a new process: the count comes from the journal
    restarted.release("score", [f"m{i}" for i in range(3)], np.ones(3))  # exactly at the limit
    assert restarted.spent()["epsilon"] <= 10.0
    with pytest.raises(PrivacyBudgetSpent, match="privacy budget spent"):
        restarted.release("score", ["one-more"], np.ones(1))
    assert restarted.release("score", ["k0"], np.ones(1)).shape == (1,)  # a repeat still answers
    assert _client(tmp_path, budget=10.0).spent()["released"] == {"randomized_response": limit}


def test_a_label_is_randomised_once_and_reused(tmp_path):
    client = ClientPrivacy(tmp_path, labels=LabelRandomizedResponse(0.1))
    prior = {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}
    first = client.noisy_label("record", "1", prior)
    assert all(client.noisy_label("record", "1", prior) == first for _ in range(20))
    assert ClientPrivacy(tmp_path, labels=LabelRandomizedResponse(0.1)).noisy_label("record", "2", {}) == first
    noisy = [client.noisy_label(f"r{i}", "1", prior) for i in range(400)]
    assert 0.2 < noisy.count("1") / 400 < 0.35  # k = 4 at eps 0.1: 0.28, not always right


# --- the server's side: what it can compute from what it holds ------------------------------------------

class _Honest:
    expert_id, domain = "client-1", "algebra"

    def __init__(self, rewards: np.ndarray) -> None:
        self.rewards = rewards

    def hello(self) -> Hello:
        return Hello(self.expert_id, self.domain)

    def score(self, request: ScoreRequest) -> ScoreReply:
        return ScoreReply(request.step, tuple(float(r) for r in self.rewards[:request.num_candidates]))

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        return CalibrationReply(tuple(1.0 for _ in request.items))


def _precision_bound(base_rate: float, n: int, z: float = 4.0) -> float:
    """Of n values a guess marks as flipped, a flipped share this far above the base rate is not
    chance (z binomial standard deviations)."""
    return base_rate + z * math.sqrt(base_rate * (1 - base_rate) / n)


def test_the_server_cannot_predict_a_clients_flips(tmp_path):
    """Play the server: it holds the config (train_seed 0), the expert id, the request's size and
    text, and every reply. Its best reconstructions of the client's noise (the generators seeded the
    old way, from train_seed and the expert id, or from anything else it holds) predict the flips no
    better than chance."""
    n, seed, expert_id = 4000, 0, "client-1"
    truth = (np.random.default_rng(7).random(n) < 0.5).astype(float)
    items = tuple(ScoreItem(f"q{i}", "basic_arithmetic", f"{i}+{i}=", (f"c{i}",)) for i in range(n))
    request = ScoreRequest(step=0, items=items)
    client = ClientPrivacy(tmp_path / expert_id, values=RandomizedResponse(1.0))
    reply = PrivateExpert(_Honest(truth), client).score(request)
    flipped = np.array(reply.rewards) != truth
    keep = keep_probability(1.0)
    guesses = {
        "old scheme (train_seed, expert id)": np.random.default_rng([seed, *expert_id.encode()]).random(n) >= keep,
        "train_seed alone": np.random.default_rng(seed).random(n) >= keep,
        "request size": np.random.default_rng(n).random(n) >= keep,
        "a secret of its own": ClientPrivacy(tmp_path / "server-guess", values=RandomizedResponse(1.0))
        .release("score", [value_key("score", i.generator, i.question, i.candidates[0]) for i in items], truth) != truth,
    }
    base = 1 - keep
    for name, guess in guesses.items():
        assert flipped[guess].mean() < _precision_bound(base, int(guess.sum())), name
    # The test can fail: a client whose secret the server knows is read exactly.
    known = ClientPrivacy(tmp_path / expert_id, values=RandomizedResponse(1.0))  # the same state dir: its secret
    replay = known.secret
    u = np.stack([replay.uniforms(2, "value", "score", value_key("score", i.generator, i.question, i.candidates[0]))
                  for i in items])
    assert ((u[:, 1] >= keep) == flipped).all()


def test_private_expert_declares_its_guarantee_and_refuses_beyond_budget(tmp_path):
    client = ClientPrivacy(tmp_path, values=RandomizedResponse(4.0), calibration=RandomizedResponse(4.0), budget=8.0)
    expert = PrivateExpert(_Honest(np.ones(1000)), client)
    hello = expert.hello()
    assert hello.privacy["values"]["epsilon_per_value"] == 4.0 and hello.privacy["values"]["budget"] == 8.0
    calibration = CalibrationRequest((CalibrationItem("a", "basic_arithmetic", "1+1=", "2"),))
    assert len(expert.calibrate(calibration).correct) == 1
    items = tuple(ScoreItem(f"q{i}", "basic_arithmetic", f"{i}=", ("x",)) for i in range(50))
    with pytest.raises(PrivacyBudgetSpent):
        expert.score(ScoreRequest(0, items))  # 51 values at 4 each: far beyond 8
    assert client.spent()["released"] == {"randomized_response": 1}  # refused whole, before any work


# --- per-value LDP on distinct answers (issue 22): one release per (question, answer) -------------------

class _ByAnswer:
    """An answer-matching expert: reads each question's distinct final answers, rewards "5"."""

    expert_id, domain = "client-2", "arithmetic"

    def hello(self) -> Hello:
        return Hello(self.expert_id, self.domain, reads=Reads.ANSWERS)

    def score(self, request: ScoreRequest) -> ScoreReply:
        assert request.reads is Reads.ANSWERS
        return ScoreReply(request.step, tuple(float(a == "5") for i in request.items for a in i.candidates))


def test_an_answer_is_released_once_whatever_candidates_carry_it(tmp_path):
    """The released value is per (question, distinct answer), keyed by the answer: candidates that
    differ only in their text around the same final answer, in one request or the next, are the same
    release (no new noise, no new epsilon), and the server's count matches the client's journal."""
    client = ClientPrivacy(tmp_path, values=RandomizedResponse(1.0))
    transport = EmbeddedTransport({"client-2": PrivateExpert(_ByAnswer(), client)}, style=PREFILL)
    transport.ledger.track_releases = True
    item = ScoreItem("q1", "basic_arithmetic", "Calculate 2 + 3.", ("5</answer>", " 5 </answer>", "7</answer>", ""))
    first = transport.score_round(0, {"client-2": ScoreRequest(0, (item,))}).replies["client-2"].rewards
    again = ScoreItem("q1", "basic_arithmetic", "Calculate 2 + 3.", ("<answer>5</answer>", "7</answer>"))
    second = transport.score_round(1, {"client-2": ScoreRequest(1, (again,))}).replies["client-2"].rewards
    assert first[0] == first[1] and second == (first[0], first[2])  # one release per answer, reused
    assert client.spent()["released"] == {"randomized_response": 3}  # "5", "7" and no answer
    keys = {k for _, _, _, ks in transport.ledger.releases for k in ks}
    assert keys == {value_key(SCORE_ANSWER, "basic_arithmetic", "Calculate 2 + 3.", a) for a in ("5", "7", NO_ANSWER)}
    assert transport.ledger.released() == {"client-2": {"score": 3}}
    # An answer's key is never a full text's (the same string read as a candidate is another value).
    assert value_key(SCORE_ANSWER, "g", "q", "5") != value_key("score", "g", "q", "5")
