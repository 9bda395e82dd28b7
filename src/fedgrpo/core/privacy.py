"""Differential privacy of a vote histogram released several times (DPSDA-FL's Private Evolution).

A client's private items each vote for one candidate per round, so adding or removing one item
changes one count by 1: the L2 sensitivity of a round's histogram is 1. Each round releases the
histogram plus Gaussian noise N(0, sigma^2) with sigma = noise multiplier x sensitivity; T rounds
compose (RDP accounting, converted to (epsilon, delta)). `noise_multiplier` finds the smallest
multiplier whose T-fold composition meets the target (epsilon, delta), with dp-accounting's own
calibration, so the noise added is exactly what the reported epsilon is computed from.

    >>> round(epsilon_spent(noise_multiplier(4.0, 1e-5, 5), 5, 1e-5), 2) <= 4.0
    True
"""

from __future__ import annotations

import math

import numpy as np


def _event(multiplier: float, releases: int):  # -> a dp_accounting DpEvent
    from dp_accounting import dp_event

    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(multiplier), releases)


def _accountant():
    from dp_accounting.rdp import rdp_privacy_accountant

    return rdp_privacy_accountant.RdpAccountant()


def noise_multiplier(epsilon: float, delta: float, releases: int) -> float:
    """The Gaussian noise multiplier (sigma / sensitivity) that spends `epsilon` at `delta` over
    `releases` compositions (dp-accounting's `calibrate_dp_mechanism`, RDP accountant)."""
    if not epsilon > 0 or not 0 < delta < 1 or releases < 1:
        raise ValueError("need epsilon > 0, 0 < delta < 1 and at least one release")
    from dp_accounting import mechanism_calibration

    return float(mechanism_calibration.calibrate_dp_mechanism(
        _accountant, lambda m: _event(m, releases), epsilon, delta,
        mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0)))


def epsilon_spent(multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at `delta` of `releases` Gaussian releases with this noise multiplier."""
    accountant = _accountant()
    accountant.compose(_event(multiplier, releases))
    return float(accountant.get_epsilon(delta))


def default_delta(private_items: int) -> float:
    """PE's choice of delta for n private items: 1 / (n ln n) (n >= 3)."""
    n = max(private_items, 3)
    return 1.0 / (n * math.log(n))


def noisy_histogram(votes: np.ndarray, sigma: float, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Vote counts plus N(0, sigma^2) each; counts below `threshold` (absolute) become 0."""
    noisy = votes.astype(float) + rng.normal(0.0, sigma, size=votes.shape)
    return np.where(noisy < threshold, 0.0, noisy)


def nearest_votes(private: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each private row votes for its nearest candidate row (cosine on l2-normalised rows): counts."""
    if len(candidates) == 0:
        return np.zeros(0)
    nearest = np.argmax(private @ candidates.T, axis=1)
    return np.bincount(nearest, minlength=len(candidates)).astype(float)
