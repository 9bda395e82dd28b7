"""Choose the M experts that score each question (paper Eq. 6) and measure how well routing went.

Notation: P questions, K experts in the federation, m (the paper's M) experts kept per question.
``competence[p, k]`` is r^p_k(x_p), expert k's mean correctness on question p's L auxiliary
neighbours (``fedgrpo.core.graph``).

Methods (the config's `selection` names, `fedgrpo.config.SELECTIONS`):

- ``"graph"`` (the paper): C(x_p) = Top-m_k r^p_k(x_p), with ``competence`` the confidence graph's.
  Selection is top-m, not a threshold. Ties, unspecified in the paper, are broken by overall
  competence on all of D_p (descending), then by expert index (ascending): deterministic, no RNG.
  Output is ordered best first.
- ``"oracle"``: the same top-m rule, with ``competence`` 1 where the expert's domain is the
  question's and 0 elsewhere (a diagnostic upper bound of routing).
- ``"random"`` (the official code's behaviour, ``random.sample(range(num_clients), num_group)``):
  m distinct experts drawn uniformly per question from ``np.random.default_rng(seed)``; same seed,
  same draw. A project baseline.
- ``"all"``: every expert, in index order (m must equal K).

Beyond the paper, `competent_counts` turns top-m into an adaptive rule: of a question's m selected
experts keep those whose competence reaches a threshold (at least the best one). The paper fixes
M = 2, so the second expert of a question is often one that knows nothing of its domain (experts
forget what they were not fine-tuned on), and half the question's candidates are scored by it.

Example
-------
>>> import numpy as np
>>> competence = np.array([[0.2, 0.9, 0.9, 0.5]])          # P=1, K=4; experts 1 and 2 tie
>>> select_experts(competence, 2, method="graph", overall=np.array([0.0, 0.3, 0.6, 0.9]))
array([[2, 1]])
>>> routing_hit_rate(np.array([[2, 1]]), ["a", "b", "c", "d"], ["c"])
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedgrpo.config import SELECTIONS
from fedgrpo.errors import ConfigError


def select_experts(
    competence: ArrayLike,
    m: int,
    *,
    method: str = "graph",
    overall: ArrayLike | None = None,
    seed: int = 0,
) -> NDArray[np.intp]:
    """Indices (P, m) of the experts chosen for each question.

    Parameters
    ----------
    competence
        Shape (P, K): competence of each of K experts for each of P questions (ranked by
        ``"graph"`` and ``"oracle"``; ``"random"`` and ``"all"`` only read its shape).
    m
        Experts per question, 1 <= m <= K.
    overall
        Shape (K,): competence on the whole auxiliary set, the first tie-break of the ranking.
        None means no tie-break beyond expert index.
    method
        One of `fedgrpo.config.SELECTIONS`: ``"graph"``, ``"oracle"``, ``"random"``, ``"all"``.
    seed
        Seed of ``"random"``.
    """
    c = np.asarray(competence, dtype=np.float64)  # (P, K)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ConfigError(f"competence must have shape (P, K) with K >= 1; got shape {c.shape}")
    P, K = c.shape
    if method not in SELECTIONS:
        raise ConfigError(f"selection method must be one of {', '.join(SELECTIONS)}; got {method!r}")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= K:
        raise ConfigError(
            f"experts_per_question must be an integer between 1 and the number of experts K={K}; "
            f"got {m!r}: lower experts_per_question or add experts"
        )
    if method == "all":
        if m != K:
            raise ConfigError(
                "selection 'all' keeps every expert, so experts_per_question must equal "
                f"K={K}; got {m}"
            )
        return np.tile(np.arange(K), (P, 1))  # (P, K)
    if method == "random":
        # Sorting i.i.d. uniform keys gives a uniformly random ordering; its first m are a uniform
        # m-subset. Vectorised over questions, and the whole draw depends only on (seed, P, K).
        keys = np.random.default_rng(seed).random((P, K))  # (P, K)
        return np.argsort(keys, axis=1)[:, :m]  # (P, m)
    if not np.isfinite(c).all():
        raise ConfigError("competence must be finite (NaN: an expert was never calibrated)")
    tie = np.zeros(K) if overall is None else np.asarray(overall, dtype=np.float64)  # (K,)
    if tie.shape != (K,) or not np.isfinite(tie).all():
        raise ConfigError(f"overall must be {K} finite numbers, one per expert; got {tie.shape}")
    index = np.broadcast_to(np.arange(K), (P, K))  # (P, K)
    # np.lexsort sorts by the last key first: competence descending, then overall descending, then
    # index ascending. lexsort is stable, and exact float ties compare equal (also -0.0 and 0.0).
    order = np.lexsort((index, np.broadcast_to(-tie, (P, K)), -c), axis=-1)  # (P, K)
    return order[:, :m]  # (P, m), best first


def competent_counts(chosen_competence: ArrayLike, threshold: float) -> NDArray[np.intp]:
    """How many of each question's selected experts to keep under a competence threshold.

    ``chosen_competence`` has shape (P, m): the competence of each question's selected experts,
    best first (as `select_experts` orders them). A question keeps the longest prefix of its experts
    whose competences all reach `threshold`, and at least its first (best) expert, so it is never
    left without a scorer. Threshold 0 keeps all m (the paper's fixed top-M).

    >>> competent_counts(np.array([[0.9, 0.1], [0.2, 0.0], [0.8, 0.6]]), 0.5)
    array([1, 1, 2])
    """
    c = np.asarray(chosen_competence, dtype=np.float64)  # (P, m)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ConfigError(f"chosen_competence must have shape (P, m) with m >= 1; got shape {c.shape}")
    if not 0 <= threshold <= 1:
        raise ConfigError(f"competence_threshold must be in [0, 1]; got {threshold!r}")
    clears = c >= threshold  # (P, m)
    prefix = np.where(clears.all(axis=1), c.shape[1], np.argmin(clears, axis=1))  # (P,): first miss
    return np.maximum(prefix, 1).astype(np.intp)


def routing_hit_rate(
    selected: ArrayLike, expert_domains: Sequence[str], question_domains: Sequence[str]
) -> float:
    """Share of questions whose selected experts include one of the question's own domain.

    Parameters
    ----------
    selected
        Shape (P, m): expert indices, as returned by ``select_experts``.
    expert_domains
        K domain names, one per expert index.
    question_domains
        P domain names, one per question.
    """
    chosen = np.asarray(selected)  # (P, m)
    experts = np.asarray(expert_domains, dtype=object)  # (K,)
    questions = np.asarray(question_domains, dtype=object)  # (P,)
    if chosen.ndim != 2 or not np.issubdtype(chosen.dtype, np.integer):
        raise ConfigError(f"selected must be integer indices of shape (P, m); got {chosen.shape}")
    if chosen.shape[0] != len(questions) or len(questions) == 0:
        raise ConfigError(
            f"need one question domain per selected row (at least one); got {len(questions)} "
            f"domains for {chosen.shape[0]} rows"
        )
    if chosen.size and (chosen.min() < 0 or chosen.max() >= len(experts)):
        raise ConfigError(f"selected holds an expert index outside 0..{len(experts) - 1}")
    hits = experts[chosen] == questions[:, None]  # (P, m)
    return float(hits.any(axis=1).mean())
