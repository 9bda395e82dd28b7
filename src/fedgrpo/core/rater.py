"""One-coin raters: how far an expert's rewards on items with known answers can be trusted, how to
read them, and the same with several experts labelling the same items (Dawid and Skene 1979, with one
accuracy per rater: the "one-coin" model).

Notation: a rater (an expert) gives binary labels (its reward, read as 0 or 1, on a candidate answer
whose truth is 1 when the answer is right). In the one-coin model rater j gives the true label with
one probability a_j, its accuracy, whatever the item. With a Beta(alpha, beta) prior on a_j, after k
agreements with the truth in n labelled values the posterior is Beta(alpha + k, beta + n - k), whose
mean is

    a_j = (k + alpha) / (n + alpha + beta).                                    (`one_coin_accuracy`)

The prior is Beta(2, 1) (mean 2/3): an expert that passed calibration starts above chance, so one
unlucky value does not flag it, and one lucky value does not clear a liar.

Labels released under randomised response (local DP: each kept with probability p, flipped
otherwise) agree with the truth with probability

    a' = a p + (1 - a)(1 - p) = 1/2 + (a - 1/2)(2p - 1),                       (`released_accuracy`)

so an honest rater's released labels agree with probability p, not 1, and a threshold on accuracy is
moved onto the released scale before comparing.

**Reading a rater** (`rater_reading`). It is flagged once its accuracy is below the threshold t with
posterior probability at least CONFIDENCE,

    P(a_j < t | k, n) = I_t(alpha + k, beta + n - k) >= CONFIDENCE,            (`posterior_below`)

I the regularised incomplete beta function (`beta_cdf`). Not the posterior mean against t: an
honest expert is right only as often as its own answer is (0.83 on groups with a right and a wrong
answer for the weakest default expert), and a mean after a few values crosses 0.75 often (half of
such experts were flagged in a simulation of a run); a 99% bound below 0.7 flagged none of them,
and still caught an inverting expert on its first group or two (`transport.recheck` says how this
was measured). A
flagged rater with a < 1/2 (posterior mean) is anti-correlated with the truth: the maximum-likelihood
reading of its label is the opposite one (INVERTED); any other flagged rater is read not at all
(UNINFORMATIVE); an unflagged one as given (TRUSTED). An inverted rater stops being read inverted once
its accuracy is above 1 - t with the same confidence (`surely_above`).

**Several raters, some truths unknown** (`one_coin_dawid_skene`). Items labelled by two raters whose
truth the server does not know (spot checks) carry evidence about both through their agreement. EM
over the unknown truths (Dawid and Skene's algorithm with one coin per rater and a class prior pi),
with the items of known truth (probes) as anchors that fix the labelling's orientation:

    E:  q_i = pi prod_j P(x_ij | 1) / (pi prod_j P(x_ij | 1) + (1 - pi) prod_j P(x_ij | 0)),
        P(x | t) = a_j if x = t else 1 - a_j;
    M:  k_j = (agreements on anchors) + sum_i [x_ij q_i + (1 - x_ij)(1 - q_i)],
        n_j = (anchored labels) + (its labels on unknown items),
        a_j = (k_j + alpha) / (n_j + alpha + beta),  pi = (sum_i q_i + 1) / (N + 2).

Deviation: the M-step takes the posterior mean of a_j given the expected counts rather than its mode,
so that without unknown items it is exactly `one_coin_accuracy`; k_j and n_j (effective counts) feed
`rater_reading` as observed counts do.

>>> agree, total = probe_agreement([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0])
>>> round(float(one_coin_accuracy(agree, total)), 3), int(rater_reading(agree, total, 0.7))
(0.857, 0)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

PRIOR_AGREE, PRIOR_DISAGREE = 2.0, 1.0  # Beta(alpha, beta) prior on a rater's accuracy
TRUSTED, INVERTED, UNINFORMATIVE = 0, 1, 2  # how a rater's labels are read (`rater_reading`)
CONFIDENCE = 0.99  # posterior probability a judgement about a rater needs


def as_labels(values: ArrayLike) -> NDArray[np.float64]:
    """Rewards read as binary labels: 1 above 1/2, 0 below; NaN for a missing reward or exactly 1/2
    (no side). 0/1 rewards pass unchanged; real ones (a scorer's partial credit) by their side.

    >>> as_labels([1.0, 0.0, 0.9, 0.5, np.nan]).tolist()
    [1.0, 0.0, 1.0, nan, nan]
    """
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(v) | (v == 0.5), np.nan, (v > 0.5).astype(np.float64))


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


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), the CDF of Beta(a, b) at x (a, b > 0),
    by its continued fraction (Numerical Recipes, 3rd ed., section 6.4), evaluated on the side
    where it converges fast.

    >>> round(beta_cdf(0.5, 2.0, 2.0), 12), round(beta_cdf(0.3, 1.0, 1.0), 12)
    (0.5, 0.3)
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"Beta parameters must be > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    # log of x^a (1 - x)^b / B(a, b), the continued fraction's front factor
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) by the modified Lentz method; it converges in
    O(sqrt(max(a, b))) terms where x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # the even term d_2m
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # the odd term d_2m+1
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (x={x}, a={a}, b={b})")


def posterior_below(agree: float, total: float, level: float) -> float:
    """P(a < level) for a one-coin rater after `agree` agreements in `total` labelled values (counts
    may be fractional: Dawid-Skene's expected ones), under the Beta(PRIOR_AGREE, PRIOR_DISAGREE) prior.

    >>> round(posterior_below(0, 0, 0.5), 4), round(posterior_below(0, 6, 0.5), 4)  # the prior; six misses
    (0.25, 0.9648)
    """
    return beta_cdf(level, PRIOR_AGREE + agree, PRIOR_DISAGREE + total - agree)


def rater_reading(agree: float, total: float, threshold: float, keep: float = 1.0,
                  confidence: float = CONFIDENCE) -> int:
    """How a rater's labels are read, from its agreements with the truth on released labels (module
    docstring): TRUSTED unless its accuracy is below `threshold` (an accuracy on true labels, moved to
    the released scale by `keep`) with posterior probability `confidence`; once below, INVERTED when
    its posterior mean is below 1/2, UNINFORMATIVE otherwise.

    >>> rater_reading(40, 40, 0.7), rater_reading(0, 6, 0.7), rater_reading(20, 40, 0.7), rater_reading(5, 6, 0.7)
    (0, 1, 2, 0)
    """
    level = float(released_accuracy(threshold, keep))
    if posterior_below(agree, total, level) < confidence:
        return TRUSTED
    return INVERTED if one_coin_accuracy(agree, total) < 0.5 else UNINFORMATIVE


def surely_above(agree: float, total: float, threshold: float, keep: float = 1.0,
                 confidence: float = CONFIDENCE) -> bool:
    """Whether a rater's accuracy is above `threshold` (moved to the released scale by `keep`) with
    posterior probability `confidence`. Of a trusted rater: it has proven itself (its labels may
    vouch for another's, `transport.recheck`); of an inverted one, with the threshold's mirror image
    1 - t: it stopped inverting, and reading its labels inverted recovers too little.

    >>> surely_above(40, 40, 0.7), surely_above(30, 40, 0.7), surely_above(0, 40, 0.3), surely_above(20, 40, 0.3)
    (True, False, False, True)
    """
    level = float(released_accuracy(threshold, keep))
    return 1.0 - posterior_below(agree, total, level) >= confidence


def one_coin_dawid_skene(agree: ArrayLike, total: ArrayLike, pairs: ArrayLike, *, iterations: int = 500,
                         tolerance: float = 1e-12) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                          NDArray[np.float64]]:
    """One-coin Dawid-Skene over K raters (module docstring): `agree` and `total` (K,) are each
    rater's agreements and labels on anchors (items of known truth); `pairs` (K, K, 2, 2) counts the
    items of unknown truth labelled by two raters, ``pairs[j, k, x, y]`` those rater j labelled x and
    rater k labelled y (each item once, j != k). Returns (accuracy, expected agreements, labels
    compared), each (K,), the last two including the anchors; without pairs, the accuracy is
    `one_coin_accuracy(agree, total)` and the counts are the anchors'.

    >>> pairs = np.zeros((2, 2, 2, 2)); pairs[0, 1, 1, 0] = pairs[0, 1, 0, 1] = 10  # 20 disagreements
    >>> [round(float(a), 2) for a in one_coin_dawid_skene([20, 0], [20, 0], pairs)[0]]  # the anchored one is right
    [0.98, 0.09]
    """
    k0 = np.asarray(agree, dtype=np.float64)  # (K,)
    n0 = np.asarray(total, dtype=np.float64)  # (K,)
    c = np.asarray(pairs, dtype=np.float64)  # (K, K, 2, 2)
    raters = k0.shape[0]
    if c.shape != (raters, raters, 2, 2):
        raise ValueError(f"pairs must be ({raters}, {raters}, 2, 2) for {raters} raters, got {c.shape}")
    if np.any(c[np.arange(raters), np.arange(raters)]):
        raise ValueError("a rater paired with itself: count each item of two raters under j != k")
    label = np.array([0.0, 1.0])
    accuracy = one_coin_accuracy(k0, n0)  # (K,)
    prior_true = 0.5
    expected, compared = k0, n0
    for _ in range(iterations):
        # P(label | truth) per rater: (K, label, truth)
        like = np.where(label[None, :, None] == label[None, None, :], accuracy[:, None, None],
                        1.0 - accuracy[:, None, None])
        joint_true = prior_true * like[:, None, :, None, 1] * like[None, :, None, :, 1]  # (K, K, 2, 2)
        joint_false = (1.0 - prior_true) * like[:, None, :, None, 0] * like[None, :, None, :, 0]
        truth = joint_true / (joint_true + joint_false)  # (K, K, 2, 2): P(truth = 1 | the two labels)
        # A label 1 agrees with the truth with probability P(truth = 1), a label 0 with the rest.
        first_agrees = np.where(label[:, None] == 1.0, truth, 1.0 - truth)  # (K, K, 2, 2): rater j's label x
        second_agrees = np.where(label[None, :] == 1.0, truth, 1.0 - truth)  # rater k's label y
        expected = k0 + (c * first_agrees).sum(axis=(1, 2, 3)) + (c * second_agrees).sum(axis=(0, 2, 3))
        compared = n0 + c.sum(axis=(1, 2, 3)) + c.sum(axis=(0, 2, 3))
        updated = one_coin_accuracy(expected, compared)
        prior_true = float(((c * truth).sum() + 1.0) / (c.sum() + 2.0))  # Beta(1, 1) prior on pi
        converged = float(np.max(np.abs(updated - accuracy), initial=0.0)) < tolerance
        accuracy = updated
        if converged:
            break
    return accuracy, expected, compared
