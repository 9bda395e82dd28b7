"""Combining one question's raw rewards from its selected experts before the advantage.

Notation: a question's federated group holds N candidates, split into blocks b = 1..m, one per
selected expert, scored by that expert: raw rewards r_i in [0, 1] (NaN = missing). c_b in [0, 1] is
expert b's competence for the question (its mean correctness on the question's L auxiliary
neighbours, `core.graph`).

`shrink_to_competent_mean` (config `competence_weighting`, beyond the paper): every block is pulled
towards the competence-weighted mean reward of the group by (1 - c_b),

    r'_i = c_b * r_i + (1 - c_b) * r_bar    for i in block b,
    r_bar = sum_b c_b sum_{i in b} r_i / sum_b c_b |b|    (present rewards only),

so a block scored by an expert that knows little of the question's domain (c_b near 0) sits near the
group's mean and gets advantages near 0, instead of pushing its candidates down or up on the word
of a model that is mostly wrong there; a fully competent expert's rewards pass unchanged. When no
selected expert has any competence (sum c_b |b| = 0) r_bar is the plain mean, and every reward
becomes it: the group carries no signal.

>>> import numpy as np
>>> shrink_to_competent_mean(np.array([1.0, 0.0, 0.0, 0.0]), [slice(0, 2), slice(2, 4)], [1.0, 0.0])
array([1. , 0. , 0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedgrpo.errors import ConfigError


def shrink_to_competent_mean(raw_reward: ArrayLike, blocks: Sequence[slice],
                             competence: Sequence[float]) -> NDArray[np.float64]:
    """Raw rewards of one question (N,) with each block shrunk by its expert's competence; NaN stays NaN."""
    r = np.asarray(raw_reward, dtype=np.float64)  # (N,)
    c = np.asarray(competence, dtype=np.float64)  # (m,)
    if len(blocks) != len(c):
        raise ConfigError(f"one competence per block: {len(blocks)} blocks, {len(c)} competences")
    if not np.all((c >= 0) & (c <= 1)):
        raise ConfigError(f"competences must lie in [0, 1]; got {c.tolist()}")
    present = ~np.isnan(r)  # (N,)
    weight = np.zeros_like(r)  # (N,): each candidate's block competence
    for block, cb in zip(blocks, c):
        weight[block] = cb
    total = float((weight * present).sum())
    if present.any():
        r_bar = float(np.nansum(weight * r) / total) if total > 0 else float(np.nanmean(r))
    else:
        r_bar = 0.0  # nothing present: every reward stays NaN below
    return weight * r + (1.0 - weight) * r_bar  # NaN * anything stays NaN


# --- Several experts scoring the same candidates (config score_replication) ----------------------------

ROBUST_AGGREGATIONS = ("mean", "median", "trimmed_mean")
TRIM = 0.25  # trimmed_mean drops this share of the values at each end (of 4 values: 1 each side)


def aggregate_replicated(rewards: ArrayLike, method: str) -> NDArray[np.float64]:
    """One reward per candidate from an (N, m) matrix of m experts' rewards for the same N
    candidates (NaN = that expert gave none): their mean, median, or mean after dropping the
    floor(TRIM * k) lowest and highest of the k present values. A candidate nobody scored stays NaN.

    >>> aggregate_replicated([[1.0, 1.0, 0.0], [0.0, np.nan, 1.0]], "median").tolist()
    [1.0, 0.5]
    """
    r = np.asarray(rewards, dtype=np.float64)
    if method not in ROBUST_AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {method!r}: use one of {', '.join(ROBUST_AGGREGATIONS)}")
    out = np.full(r.shape[0], np.nan)
    for i, row in enumerate(r):
        present = np.sort(row[~np.isnan(row)])
        if not len(present):
            continue
        if method == "mean":
            out[i] = present.mean()
        elif method == "median":
            out[i] = float(np.median(present))
        else:
            cut = int(np.floor(TRIM * len(present)))
            out[i] = present[cut:len(present) - cut].mean()
    return out


def peer_agreement(rewards: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each expert's agreement with its peers on shared candidates: for an (N, m) matrix of m
    experts' rewards for the same N candidates (NaN = none), per expert (column) the number of its
    present rewards that fall on the same side of 1/2 as the median of the other experts' present
    rewards for that candidate, and the number compared. A value is compared only when at least two
    others are present and their median is not exactly 1/2 (no consensus to agree with): of three
    experts with one liar, only the liar is compared where the two others agree.

    >>> [x.tolist() for x in peer_agreement([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])]
    [[2, 2, 2, 0], [2, 2, 2, 2]]
    >>> [x.tolist() for x in peer_agreement([[1.0, 1.0, 0.0], [1.0, np.nan, 1.0]])]
    [[0, 0, 0], [0, 0, 1]]
    """
    r = np.asarray(rewards, dtype=np.float64)
    agreed = np.zeros(r.shape[1], dtype=np.int64)
    compared = np.zeros(r.shape[1], dtype=np.int64)
    for j in range(r.shape[1]):
        for i in range(r.shape[0]):
            others = np.delete(r[i], j)
            others = others[~np.isnan(others)]
            if np.isnan(r[i, j]) or len(others) < 2:
                continue
            consensus = float(np.median(others))
            if consensus == 0.5:
                continue
            compared[j] += 1
            agreed[j] += int((r[i, j] > 0.5) == (consensus > 0.5))
    return agreed, compared
