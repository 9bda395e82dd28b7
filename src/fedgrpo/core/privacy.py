"""Differential privacy: DPSDA-FL's vote histograms, and local DP of FedGRPO's reward channel.

Part 1, a vote histogram released several times (DPSDA-FL's Private Evolution).

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

import functools
import math
from dataclasses import dataclass

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


# --- Local differential privacy of the reward channel (FedGRPO's own clients) -----------------------
#
# Every value a client sends (a reward per candidate, a correctness value per auxiliary item) is
# released through an epsilon-LDP mechanism on the client, before it leaves:
#
# - ``randomized_response`` (0/1 values, the built-in scorers): keep the value with probability
#   p = e^eps / (1 + e^eps), flip it otherwise; the server may debias, E[(r~ - (1 - p)) / (2p - 1)] = r;
# - ``laplace`` (real values in [0, 1]): add Laplace noise of scale 1/eps, clip to [0, 1] (clipping is
#   post-processing: no further privacy cost; the clipped value is biased towards the middle).
#
# A NaN ("no reward") is not a noisy release and stays NaN. A client's releases compose: its epsilon
# spent after k releases at delta is the k-fold composition of the mechanism's privacy loss
# distribution (dp-accounting's PLD, self-composed; its accountant's SelfComposedDpEvent ignores the
# count for randomised response, so the PLD is composed directly).

LDP_MECHANISMS = ("randomized_response", "laplace")
_PLD_INTERVAL = 1e-2  # PLD discretisation: within 0.1% of the 1e-4 result, 100x faster at 20,000 releases


def keep_probability(epsilon: float) -> float:
    """Randomised response: the probability that a 0/1 value is sent unchanged."""
    return math.exp(epsilon) / (1.0 + math.exp(epsilon))


def randomized_response(values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Each 0/1 value flipped with probability 1 - keep_probability(epsilon); NaN stays NaN."""
    values = np.asarray(values, dtype=float)
    flip = rng.random(values.shape) >= keep_probability(epsilon)
    return np.where(np.isnan(values), np.nan, np.where(flip, 1.0 - values, values))


def bounded_laplace(values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Each value in [0, 1] plus Laplace(1/epsilon) noise, clipped to [0, 1]; NaN stays NaN."""
    values = np.asarray(values, dtype=float)
    noisy = np.clip(values + rng.laplace(0.0, 1.0 / epsilon, size=values.shape), 0.0, 1.0)
    return np.where(np.isnan(values), np.nan, noisy)


def debias_randomized_response(values: np.ndarray, epsilon: float) -> np.ndarray:
    """The unbiased estimate of the true 0/1 value behind each randomised-response value."""
    p = keep_probability(epsilon)
    return (np.asarray(values, dtype=float) - (1.0 - p)) / (2.0 * p - 1.0)


@functools.lru_cache(maxsize=4096)
def ldp_epsilon(releases: int, epsilon: float, delta: float, mechanism: str) -> float:
    """Epsilon at `delta` spent by `releases` values each released with `mechanism` at `epsilon`."""
    if releases <= 0:
        return 0.0
    from dp_accounting.pld import privacy_loss_distribution as pld

    if mechanism == "randomized_response":
        # dp-accounting's noise parameter: the probability of answering uniformly at random.
        one = pld.from_randomized_response(2.0 * (1.0 - keep_probability(epsilon)), 2,
                                           value_discretization_interval=_PLD_INTERVAL)
    elif mechanism == "laplace":
        one = pld.from_laplace_mechanism(1.0 / epsilon, sensitivity=1.0, value_discretization_interval=_PLD_INTERVAL)
    else:
        raise ValueError(f"unknown mechanism {mechanism!r}: use one of {', '.join(LDP_MECHANISMS)}")
    return float(min(releases * epsilon, one.self_compose(releases).get_epsilon_for_delta(delta)))


def max_releases(budget: float, epsilon: float, delta: float, mechanism: str) -> int:
    """The most values a client may release before its epsilon spent at `delta` exceeds `budget`."""
    if ldp_epsilon(1, epsilon, delta, mechanism) > budget:
        return 0
    low, high = 1, 2
    while ldp_epsilon(high, epsilon, delta, mechanism) <= budget:
        low, high = high, high * 2
    while high - low > 1:  # ldp_epsilon(low) <= budget < ldp_epsilon(high)
        mid = (low + high) // 2
        low, high = (mid, high) if ldp_epsilon(mid, epsilon, delta, mechanism) <= budget else (low, mid)
    return low


def sign_fidelity(clean: np.ndarray, noisy: np.ndarray) -> float | None:
    """Within one block of rewards: the share of candidates whose advantage sign (reward minus the
    block's mean) the noise preserved, over candidates with a non-zero clean advantage; None if none."""
    clean, noisy = np.asarray(clean, dtype=float), np.asarray(noisy, dtype=float)
    present = ~np.isnan(clean)
    if present.sum() < 2:
        return None
    a = clean[present] - clean[present].mean()
    b = noisy[present] - noisy[present].mean()
    signed = a != 0
    return float((np.sign(a[signed]) == np.sign(b[signed])).mean()) if signed.any() else None


@dataclass(frozen=True)
class LocalPrivacy:
    """A client's LDP settings (config section ``privacy``): its mechanism, epsilon per value, and
    the most values it may release under its budget (None: no budget)."""

    mechanism: str
    epsilon: float
    max_releases: int | None
    seed: int

    def release(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.mechanism == "randomized_response":
            return randomized_response(values, self.epsilon, rng)
        return bounded_laplace(values, self.epsilon, rng)
