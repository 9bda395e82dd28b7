"""One-coin raters: how far an expert's rewards on items with known answers can be trusted, and how to
read them (Dawid and Skene 1979, with one accuracy per rater: the "one-coin" model).

Notation: a rater (an expert) gives binary labels (its reward 0 or 1 on a probe candidate whose truth
the server knows). In the one-coin model rater j gives the true label with one probability a_j, its
accuracy, whatever the item. With a Beta(alpha, beta) prior on a_j, after k agreements with the truth
in n labelled values the posterior is Beta(alpha + k, beta + n - k), whose mean is

    a_j = (k + alpha) / (n + alpha + beta).                                    (`one_coin_accuracy`)

The prior is Beta(2, 1) (mean 2/3): an expert that passed calibration starts above chance, so one
unlucky value does not flag it, and one lucky value does not clear a liar.

Labels released under randomised response (local DP: each kept with probability p, flipped
otherwise) agree with the truth with probability

    a' = a p + (1 - a)(1 - p) = 1/2 + (a - 1/2)(2p - 1),                       (`released_accuracy`)

so an honest rater's released labels agree with probability p, not 1, and a threshold on accuracy is
moved onto the released scale before comparing.

A rater with a < 1/2 is anti-correlated with the truth: the maximum-likelihood reading of its label
is the opposite one. `rater_reading` says per rater whether its labels are read as given (TRUSTED:
accuracy at least the threshold), as their opposite (INVERTED: as far below chance as the threshold is
above it), or not at all (UNINFORMATIVE: near chance, nothing to recover).

Deviation from Dawid-Skene: no EM over unknown truths. The truths here are the probes' known answers,
so the posterior above is exact and needs no iteration.

>>> agree, total = probe_agreement([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0])
>>> round(float(one_coin_accuracy(agree, total)), 3), int(rater_reading(one_coin_accuracy(agree, total), 0.75))
(0.857, 0)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

PRIOR_AGREE, PRIOR_DISAGREE = 2.0, 1.0  # Beta(alpha, beta) prior on a rater's accuracy
TRUSTED, INVERTED, UNINFORMATIVE = 0, 1, 2  # how a rater's labels are read (`rater_reading`)


def probe_agreement(released: ArrayLike, truth: ArrayLike) -> tuple[int, int]:
    """(agreements, values compared) of one rater's released labels against their known truths; a
    NaN label (no reward) is left out of both.

    >>> probe_agreement([1.0, 0.0, np.nan, 1.0], [1.0, 1.0, 0.0, 1.0])
    (2, 3)
    """
    r = np.asarray(released, dtype=np.float64)  # (n,)
    t = np.asarray(truth, dtype=np.float64)  # (n,)
    if r.shape != t.shape:
        raise ValueError(f"one truth per label: {r.shape} labels, {t.shape} truths")
    present = ~np.isnan(r)  # (n,)
    return int(np.sum(r[present] == t[present])), int(present.sum())


def one_coin_accuracy(agree: ArrayLike, total: ArrayLike) -> NDArray[np.float64]:
    """Posterior mean accuracy of one-coin raters after `agree` agreements in `total` labelled
    values, elementwise (a numpy scalar for scalar inputs).

    >>> float(one_coin_accuracy(0, 0)), float(one_coin_accuracy(5, 10))  # the prior; (5 + 2) / (10 + 3)
    (0.6666666666666666, 0.5384615384615384)
    """
    k = np.asarray(agree, dtype=np.float64)
    n = np.asarray(total, dtype=np.float64)
    return (k + PRIOR_AGREE) / (n + PRIOR_AGREE + PRIOR_DISAGREE)


def released_accuracy(accuracy: ArrayLike, keep: ArrayLike) -> NDArray[np.float64]:
    """Probability that a label of a rater with this accuracy still agrees with the truth after
    randomised response keeps it with probability `keep` (flips it otherwise); elementwise.

    >>> float(released_accuracy(1.0, 0.75)), float(released_accuracy(0.0, 0.75))  # honest, inverting
    (0.75, 0.25)
    """
    a = np.asarray(accuracy, dtype=np.float64)
    p = np.asarray(keep, dtype=np.float64)
    return 0.5 + (a - 0.5) * (2.0 * p - 1.0)


def rater_reading(accuracy: ArrayLike, threshold: float, keep: float = 1.0) -> NDArray[np.int64]:
    """How each rater's labels are read, from its accuracy on released labels: TRUSTED at or above
    `threshold` (an accuracy on true labels, moved to the released scale by `keep`), INVERTED below
    the mirror image of that around 1/2, UNINFORMATIVE between. TRUSTED is tested first, so a
    threshold under 1/2 never reads a rater as inverted that it trusts.

    >>> rater_reading([0.9, 0.5, 0.1], 0.75).tolist()
    [0, 2, 1]
    """
    a = np.asarray(accuracy, dtype=np.float64)  # (K,) or a scalar
    high = float(released_accuracy(threshold, keep))
    low = 1.0 - high  # as far below chance as `high` is above it: anti-correlated
    return np.where(a >= high, TRUSTED, np.where(a < low, INVERTED, UNINFORMATIVE)).astype(np.int64)
