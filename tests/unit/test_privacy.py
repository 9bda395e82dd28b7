"""DPSDA-FL's privacy maths: the Gaussian noise is dp-accounting's calibration for (epsilon, delta)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event, privacy_accountant
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from fedgrpo.config import LDP_MECHANISMS as CONFIG_MECHANISMS
from fedgrpo.core.privacy import (
    LDP_MECHANISMS,
    bounded_laplace,
    debias_randomized_response,
    default_delta,
    epsilon_spent,
    keep_probability,
    ldp_epsilon,
    max_releases,
    nearest_votes,
    noise_multiplier,
    noisy_histogram,
    randomized_response,
    sign_fidelity,
)


def _rdp_epsilon(multiplier: float, releases: int, delta: float) -> float:
    """dp-accounting's own epsilon for `releases` Gaussian releases, computed here without our code."""
    accountant = rdp_privacy_accountant.RdpAccountant()
    for _ in range(releases):
        accountant.compose(dp_event.GaussianDpEvent(multiplier))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(("epsilon", "delta", "releases"), [(1.0, 1e-5, 11), (4.0, 1.45e-4, 5), (8.0, 3e-6, 1)])
def test_noise_multiplier_spends_exactly_the_budget(epsilon, delta, releases):
    m = noise_multiplier(epsilon, delta, releases)
    assert _rdp_epsilon(m, releases, delta) == pytest.approx(epsilon, rel=2e-3)
    assert _rdp_epsilon(0.98 * m, releases, delta) > epsilon  # any less noise overspends
    assert epsilon_spent(m, releases, delta) == pytest.approx(_rdp_epsilon(m, releases, delta), rel=1e-9)


def test_more_rounds_or_less_epsilon_need_more_noise():
    assert noise_multiplier(1.0, 1e-5, 5) > noise_multiplier(4.0, 1e-5, 5)
    assert noise_multiplier(4.0, 1e-5, 10) > noise_multiplier(4.0, 1e-5, 5)


def test_bad_parameters_are_refused():
    for args in ((0.0, 1e-5, 1), (1.0, 0.0, 1), (1.0, 1.0, 1), (1.0, 1e-5, 0)):
        with pytest.raises(ValueError):
            noise_multiplier(*args)


def test_default_delta_is_pe_choice():
    assert default_delta(1000) == pytest.approx(1 / (1000 * math.log(1000)))


def test_noisy_histogram_noise_has_the_calibrated_scale():
    rng = np.random.default_rng(0)
    votes = np.zeros(200_000)
    noisy = noisy_histogram(votes, sigma=2.5, threshold=-np.inf, rng=rng)
    assert noisy.std() == pytest.approx(2.5, rel=0.01)
    assert abs(noisy.mean()) < 0.02
    kept = noisy_histogram(np.array([10.0, 0.0, 5.0]), sigma=0.0, threshold=6.0, rng=rng)
    assert kept.tolist() == [10.0, 0.0, 0.0]


def test_nearest_votes_against_a_loop():
    rng = np.random.default_rng(1)
    private, candidates = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    expected = np.zeros(7)
    for row in private:
        expected[max(range(7), key=lambda j: float(row @ candidates[j]))] += 1
    assert nearest_votes(private, candidates).tolist() == expected.tolist()
    assert nearest_votes(private, candidates).sum() == 50  # sensitivity 1: one vote per item


# --- local DP of the reward channel -------------------------------------------------------------------

def test_the_config_names_the_same_mechanisms():
    assert CONFIG_MECHANISMS == LDP_MECHANISMS


def test_randomized_response_flips_at_the_calibrated_rate_and_debiasing_is_unbiased():
    rng = np.random.default_rng(0)
    truth = (rng.random(200_000) < 0.3).astype(float)
    noisy = randomized_response(truth, 1.0, rng)
    assert set(np.unique(noisy)) == {0.0, 1.0}
    assert (noisy != truth).mean() == pytest.approx(1 - keep_probability(1.0), abs=0.005)
    assert debias_randomized_response(noisy, 1.0).mean() == pytest.approx(truth.mean(), abs=0.01)
    assert np.isnan(randomized_response(np.array([np.nan]), 1.0, rng)[0])


def test_bounded_laplace_stays_in_range_and_keeps_missing_values():
    rng = np.random.default_rng(1)
    out = bounded_laplace(np.array([0.0, 0.5, 1.0, np.nan] * 1000), 0.5, rng)
    present = out[~np.isnan(out)]
    assert present.min() >= 0.0 and present.max() <= 1.0 and np.isnan(out[3::4]).all()


def _composed_by_the_accountant(k, epsilon, delta):
    """k randomised-response releases composed one by one by dp-accounting's PLD accountant."""
    accountant = pld_privacy_accountant.PLDAccountant(privacy_accountant.NeighboringRelation.REPLACE_ONE)
    for _ in range(k):
        accountant.compose(dp_event.RandomizedResponseDpEvent(2 * (1 - keep_probability(epsilon)), 2))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_ldp_epsilon_is_the_accountants_composition(k):
    assert ldp_epsilon(k, 1.0, 1e-5, "randomized_response") == pytest.approx(_composed_by_the_accountant(k, 1.0, 1e-5),
                                                                              rel=0.01)
    assert ldp_epsilon(k, 1.0, 1e-5, "randomized_response") <= k * 1.0 + 1e-9  # never above basic composition


def test_max_releases_is_the_last_count_within_budget():
    for mechanism in LDP_MECHANISMS:
        n = max_releases(20.0, 1.0, 1e-5, mechanism)
        assert ldp_epsilon(n, 1.0, 1e-5, mechanism) <= 20.0 < ldp_epsilon(n + 1, 1.0, 1e-5, mechanism)
    assert max_releases(0.5, 1.0, 1e-5, "randomized_response") == 0


def test_sign_fidelity():
    assert sign_fidelity(np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0, 0.0])) == 1.0
    assert sign_fidelity(np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0])) == 0.5
    assert sign_fidelity(np.array([1.0, 1.0]), np.array([0.0, 1.0])) is None  # no signal to preserve
