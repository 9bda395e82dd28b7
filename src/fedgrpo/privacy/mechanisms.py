"""Differentially private mechanisms, each deterministic given the uniform draws it is handed.

A mechanism never draws randomness itself: the caller passes uniforms in [0, 1) derived from the
client's secret (`privacy.secret`), so the same (secret, value key) always gives the same release
and nothing the server holds predicts one. Each mechanism also gives the privacy loss distribution
of one release (dp-accounting), which `privacy.accounting` composes.

| mechanism | input | unit | guarantee of one release |
|---|---|---|---|
| `RandomizedResponse` | a 0/1 value | one value | epsilon-LDP (pure) |
| `BoundedLaplace` | a value in [0, 1] | one value | epsilon-LDP (pure), clipped after |
| `LabelRandomizedResponse` | a label and a prior over labels | one record's label | epsilon-label-DP (pure) |
| `gaussian_histogram` | vote counts (sensitivity 1) | one record | (epsilon, delta) by `accounting` |

A missing value (NaN: "no reward") is released like a present one, from a fair input drawn with the
first uniform: whether a client can score a question (whether it holds its label) is then protected
at the same epsilon as the value itself, where an untouched NaN would tell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

UNIFORMS_PER_VALUE = 2  # (fair input for a missing value, the mechanism's own draw)


def _check_uniforms(values: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    uniforms = np.asarray(uniforms, dtype=float)
    if uniforms.shape != (len(values), UNIFORMS_PER_VALUE):
        raise ValueError(f"need ({len(values)}, {UNIFORMS_PER_VALUE}) uniforms, got {uniforms.shape}")
    return uniforms


@dataclass(frozen=True)
class RandomizedResponse:
    """Binary randomised response (Warner 1965): keep a 0/1 value with probability
    p = e^eps / (1 + e^eps), flip it otherwise. The server's unbiased estimate of the true value is
    (r - (1 - p)) / (2p - 1)."""

    epsilon: float
    name: str = "randomized_response"

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")

    @property
    def keep(self) -> float:
        return keep_probability(self.epsilon)

    def release(self, values: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        u = _check_uniforms(values, uniforms)
        filled = np.where(np.isnan(values), (u[:, 0] < 0.5).astype(float), values)
        if not np.isin(filled, (0.0, 1.0)).all():
            raise ValueError("randomised response releases 0/1 values only; use BoundedLaplace for real ones")
        return np.where(u[:, 1] >= self.keep, 1.0 - filled, filled)

    def debias(self, released: np.ndarray) -> np.ndarray:
        return debias_randomized_response(released, self.epsilon)

    def pld(self, value_discretization_interval: float) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld

        # dp-accounting's noise parameter: the probability of answering uniformly at random.
        return pld.from_randomized_response(2.0 * (1.0 - self.keep), 2,
                                            value_discretization_interval=value_discretization_interval)


@dataclass(frozen=True)
class BoundedLaplace:
    """A value in [0, 1] plus Laplace(1/eps) noise (sensitivity 1, the range's width), then clipped
    to [0, 1] (post-processing; the clipped value is biased towards the middle)."""

    epsilon: float
    name: str = "laplace"

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")

    def release(self, values: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        u = _check_uniforms(values, uniforms)
        filled = np.where(np.isnan(values), u[:, 0], values)
        if ((filled < 0) | (filled > 1)).any():
            raise ValueError("bounded Laplace releases values in [0, 1]")
        centred = u[:, 1] - 0.5  # inverse CDF of Laplace(0, b)
        noise = -np.sign(centred) * np.log1p(-2.0 * np.abs(centred)) / self.epsilon
        return np.clip(filled + noise, 0.0, 1.0)

    def debias(self, released: np.ndarray) -> np.ndarray:
        return np.asarray(released, dtype=float)  # nothing unbiased to undo after clipping

    def pld(self, value_discretization_interval: float) -> Any:
        from dp_accounting.pld import privacy_loss_distribution as pld

        return pld.from_laplace_mechanism(1.0 / self.epsilon, sensitivity=1.0,
                                          value_discretization_interval=value_discretization_interval)


VALUE_MECHANISMS = {"randomized_response": RandomizedResponse, "laplace": BoundedLaplace}


@dataclass(frozen=True)
class LabelRandomizedResponse:
    """RRWithPrior (Ghazi, Golowich, Kumar, Manurangsi, Zhang, "Deep Learning with Label Differential
    Privacy", NeurIPS 2021, Algorithm 2): epsilon-label-DP for one record, for any prior over labels
    that does not depend on that record's label.

    Sort the labels by prior mass; choose the k that maximises (mass of the top k) x e^eps / (e^eps
    + k - 1); if the true label is among the top k, keep it with probability e^eps / (e^eps + k - 1)
    and otherwise answer one of the other k - 1 uniformly; if it is not, answer one of the top k
    uniformly. k-ary randomised response over the answers the prior finds plausible, which keeps far
    more labels right than k-ary RR over a whole answer space at the same epsilon."""

    epsilon: float
    name: str = "label_rr_with_prior"

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")

    def top_k(self, prior: Mapping[str, float]) -> list[str]:
        """The labels RRWithPrior answers among: the top k of the prior (ties broken by label)."""
        ranked = sorted((label for label, mass in prior.items() if mass > 0), key=lambda a: (-prior[a], a))
        if not ranked:
            return []
        total = sum(prior[a] for a in ranked)
        e = math.exp(self.epsilon)
        best_k, best, mass = 1, -1.0, 0.0
        for k, label in enumerate(ranked, start=1):
            mass += prior[label] / total
            value = mass * e / (e + k - 1)
            if value > best:
                best_k, best = k, value
        return ranked[:best_k]

    def release(self, label: str, prior: Mapping[str, float], uniforms: np.ndarray) -> str | None:
        """The noisy label (None when the prior holds no label: nothing to answer among, whatever the
        true label; the caller treats it as unlabelled)."""
        u = np.asarray(uniforms, dtype=float)
        if u.shape != (UNIFORMS_PER_VALUE,):
            raise ValueError(f"need {UNIFORMS_PER_VALUE} uniforms, got {u.shape}")
        top = self.top_k(prior)
        if not top:
            return None
        k = len(top)
        if label in top:
            keep = math.exp(self.epsilon) / (math.exp(self.epsilon) + k - 1)
            if u[0] < keep or k == 1:
                return label
            others = [a for a in top if a != label]
            return others[min(int(u[1] * len(others)), len(others) - 1)]
        return top[min(int(u[1] * k), k - 1)]


def keep_probability(epsilon: float) -> float:
    """Binary randomised response: the probability that a 0/1 value is sent unchanged."""
    return math.exp(epsilon) / (1.0 + math.exp(epsilon))


def debias_randomized_response(values: np.ndarray, epsilon: float) -> np.ndarray:
    """The unbiased estimate of the true 0/1 value behind each randomised-response value."""
    p = keep_probability(epsilon)
    return (np.asarray(values, dtype=float) - (1.0 - p)) / (2.0 * p - 1.0)


def gaussian_histogram(votes: np.ndarray, sigma: float, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """DPSDA-FL's release: vote counts plus N(0, sigma^2) each; counts below `threshold` become 0
    (post-processing). `rng` must come from the client's secret (`privacy.secret`)."""
    noisy = votes.astype(float) + rng.normal(0.0, sigma, size=votes.shape)
    return np.where(noisy < threshold, 0.0, noisy)


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
