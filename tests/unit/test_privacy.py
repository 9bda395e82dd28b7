"""DPSDA-FL's privacy maths: the Gaussian noise is dp-accounting's calibration for (epsilon, delta)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

from fedgrpo.core.privacy import (
    default_delta,
    epsilon_spent,
    nearest_votes,
    noise_multiplier,
    noisy_histogram,
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
