"""Privacy accounting: how much epsilon a client has spent, and the noise a target needs.

- Per-value releases (`values_epsilon`): the composition of every distinct value a client released,
  each under the mechanism that produced it (calibration bits by randomised response, rewards by
  the reward mechanism), with dp-accounting's privacy loss distributions. The discretisation is
  epsilon / 100 of the smallest per-value epsilon: a fixed 1e-2 over-states small epsilons badly
  (19,000 values at 0.01 per value: 98 instead of 7.3). dp-accounting's `PLDAccountant` ignores the
  count of a self-composed randomised-response event, so the PLD itself is composed.
- DPSDA-FL's Gaussian histograms (`gaussian_noise_multiplier`, `gaussian_epsilon`): T releases of
  sensitivity 1, RDP accounting, dp-accounting's own calibration.
- DP-SGD (`dpsgd_epsilon`): Poisson-subsampled Gaussian steps composed by dp-accounting's PLD
  accountant, the independent check of Opacus's accountant (`models.dp_sgd`), and the config-time
  check that a target is reachable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

DISCRETISATION_SHARE = 0.01  # PLD value interval as a share of the smallest per-value epsilon


def pld_interval(*epsilons: float) -> float:
    return DISCRETISATION_SHARE * min(epsilons)


@functools.lru_cache(maxsize=4096)
def _values_epsilon(counts: tuple[tuple[Any, int], ...], delta: float) -> float:
    counts = tuple((m, n) for m, n in counts if n > 0)
    if not counts:
        return 0.0
    interval = pld_interval(*(m.epsilon for m, _ in counts))
    composed = None
    for mechanism, n in counts:
        one = mechanism.pld(interval).self_compose(n)
        composed = one if composed is None else composed.compose(one)
    basic = sum(m.epsilon * n for m, n in counts)  # pure DP composes to at most the sum
    return float(min(basic, composed.get_epsilon_for_delta(delta)))


def values_epsilon(counts: Mapping[Any, int], delta: float) -> float:
    """Epsilon at `delta` of releasing `counts[m]` distinct values under each mechanism m."""
    return _values_epsilon(tuple(sorted(counts.items(), key=lambda kv: repr(kv[0]))), delta)


def max_values(mechanism: Any, already: Mapping[Any, int], budget: float, delta: float) -> int:
    """The most values `mechanism` may release in all (counting `already[mechanism]`) while the
    composition with everything else in `already` stays within `budget` at `delta`."""
    others = tuple(sorted(((m, n) for m, n in already.items() if m != mechanism and n > 0),
                          key=lambda kv: repr(kv[0])))
    return _max_values(mechanism, others, budget, delta)


@functools.lru_cache(maxsize=256)
def _max_values(mechanism: Any, others: tuple[tuple[Any, int], ...], budget: float, delta: float) -> int:
    def spent(n: int) -> float:
        return values_epsilon({**dict(others), mechanism: n}, delta)

    if spent(0) > budget:
        return 0
    low, high = 0, 1
    while spent(high) <= budget:
        low, high = high, high * 2
    while high - low > 1:  # spent(low) <= budget < spent(high)
        mid = (low + high) // 2
        low, high = (mid, high) if spent(mid) <= budget else (low, mid)
    return low


# --- Gaussian releases (DPSDA-FL's vote histograms) --------------------------------------------------

def _gaussian_event(multiplier: float, releases: int) -> Any:
    from dp_accounting import dp_event

    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(multiplier), releases)


def _rdp_accountant() -> Any:
    from dp_accounting.rdp import rdp_privacy_accountant

    return rdp_privacy_accountant.RdpAccountant()


def gaussian_noise_multiplier(epsilon: float, delta: float, releases: int) -> float:
    """The Gaussian noise multiplier (sigma / sensitivity) that spends `epsilon` at `delta` over
    `releases` compositions (dp-accounting's `calibrate_dp_mechanism`, RDP accountant)."""
    if not epsilon > 0 or not 0 < delta < 1 or releases < 1:
        raise ValueError("need epsilon > 0, 0 < delta < 1 and at least one release")
    from dp_accounting import mechanism_calibration

    return float(mechanism_calibration.calibrate_dp_mechanism(
        _rdp_accountant, lambda m: _gaussian_event(m, releases), epsilon, delta,
        mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0)))


def gaussian_epsilon(multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at `delta` of `releases` Gaussian releases with this noise multiplier (RDP)."""
    accountant = _rdp_accountant()
    accountant.compose(_gaussian_event(multiplier, releases))
    return float(accountant.get_epsilon(delta))


def default_delta(private_items: int) -> float:
    """PE's choice of delta for n private items: 1 / (n ln n) (n >= 3)."""
    n = max(private_items, 3)
    return 1.0 / (n * math.log(n))


# --- DP-SGD (each expert's fine-tuning) ----------------------------------------------------------------

MAX_NOISE_MULTIPLIER = 1e3  # beyond this an expert learns nothing: the target is refused


def dpsgd_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Epsilon at `delta` of `steps` Poisson-subsampled Gaussian steps (dp-accounting's PLD
    accountant): the check on Opacus's own accountant."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier)), steps))
    return float(accountant.get_epsilon(delta))


def check_dpsgd_target(epsilon: float, delta: float, sampling_rate: float, steps: int) -> None:
    """ValueError (naming what to change) when no noise multiplier up to MAX_NOISE_MULTIPLIER keeps
    `steps` Poisson-subsampled Gaussian steps within `epsilon` at `delta`: the target is out of reach
    of the planned training. One accountant call: cheap enough for a config check."""
    if not epsilon > 0 or not 0 < delta < 1 or not 0 < sampling_rate <= 1 or steps < 1:
        raise ValueError("need epsilon > 0, 0 < delta < 1, a sampling rate in (0, 1] and at least one step")
    if dpsgd_epsilon(MAX_NOISE_MULTIPLIER, sampling_rate, steps, delta) > epsilon:
        raise ValueError(f"epsilon {epsilon:g} at delta {delta:g} needs a noise multiplier above "
                         f"{MAX_NOISE_MULTIPLIER:g} over {steps} steps at sampling rate {sampling_rate:.3g}")
