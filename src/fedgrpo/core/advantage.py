"""Federated group-relative advantages over the rewards of the selected experts.

Notation: P questions per step, M selected experts per question, G candidates per selected
expert. Rewards and advantages have shape (P, M, G); the *federated group* of a question is its M*G
candidates.

Paper (Eqs. 7-9), over the selected experts C, |C| = M, for one candidate y:

    mu    = (1/M) sum_{k in C} r_k
    sigma = sqrt((1/M) sum_{k in C} (r_k - mu)^2)          population std
    R_k   = (r_k - mu) / (sigma + eps)

Why not the literal reading. Normalising the M experts' scores of one and the same candidate
gives sum_k R_k = 0, so the summed update sum_k R_k * grad log pi(y|x) is zero: nothing is learned.
With M = 2 and std scaling R_k = +-1 whenever the two scores differ, which says which expert was
more generous, not whether y was good. Remark 2 ties "group" to GRPO's set of candidates, so the
group here spans candidates as well as experts (docs: paper.md section 4).

Pooling (which rewards share a mean and std):

- ``"joint"`` (default): all M*G rewards of a question; the official code at HEAD (commit 6d7b320).
- ``"per_expert"``: each expert's block of G; the official code at submission (two halves of 4).

Scaling (``scale_rewards``, TRL's names): ``"none"`` centres only (Dr. GRPO; the official code,
whose scripts all set ``scale_rewards False``); ``"group"`` divides by the pooled group's std + eps
(the paper's sigma + eps); ``"batch"`` divides by one std over every reward of the step.

Where we follow TRL 1.16 rather than the paper, so that ``pooling="joint"`` equals what
``GRPOTrainer`` computes with ``num_generations = M*G`` (``trl/trainer/grpo_trainer.py``,
``_generate_and_score_completions``; ``trl/trainer/utils.py``, ``nanstd``):

- std is the *unbiased* (Bessel-corrected, ddof=1) NaN-aware std, not the paper's population std:
  ``variance = nanmean((x - mean) ** 2) * count / (count - 1)``, NaN when ``count <= 1``.
- mean: ``mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)``.
- advantage: ``advantages = rewards - mean_grouped_rewards``, then, unless ``"none"``,
  ``advantages = advantages / (std_rewards + 1e-4)``; our ``eps`` defaults to TRL's fixed 1e-4.
- ``"batch"`` still centres on the *group* mean and divides by ``nanstd(rewards)`` over the whole
  flat batch (every question, every candidate; NaN left out).
- NaN: a NaN reward (failed or missing reply) is left out of the mean and the std, and every NaN
  advantage becomes 0 (``torch.nan_to_num(advantages, nan=0.0)``). So a NaN reward, an all-NaN
  group and a group with one valid reward (std NaN) all give 0. TRL's special cases
  (``num_generations == 1`` or a one-element batch gives std 0) give the same 0 here, so they need
  no branch.
- TRL would turn an infinite reward into +-float max; we reject non-finite, non-NaN rewards instead.

M = 1 is plain GRPO over G candidates with either pooling.

Example
-------
>>> import numpy as np
>>> rewards = np.array([[[1.0, 0.0], [1.0, np.nan]]])   # P=1 question, M=2 experts, G=2 candidates
>>> federated_advantages(rewards, scale_rewards="none").round(3)
array([[[ 0.333, -0.667],
        [ 0.333,  0.   ]]])
>>> federated_advantages(rewards, pooling="per_expert", scale_rewards="none")
array([[[ 0.5, -0.5],
        [ 0. ,  0. ]]])
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedgrpo.config import SCALE_REWARDS
from fedgrpo.errors import ConfigError

Pooling = Literal["joint", "per_expert"]
ScaleRewards = Literal["none", "group", "batch"]
POOLINGS: tuple[str, ...] = ("joint", "per_expert")


def federated_advantages(
    rewards: ArrayLike,
    *,
    pooling: Pooling = "joint",
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
) -> NDArray[np.float64]:
    """Group-relative advantages of (P, M, G) rewards; NaN rewards get advantage 0.

    Parameters
    ----------
    rewards
        Shape (P, M, G): question, selected expert, candidate. NaN marks a missing or failed reward.
    pooling
        ``"joint"`` pools all M*G rewards of a question; ``"per_expert"`` each block of G.
    scale_rewards
        ``"none"`` (centre only), ``"group"`` (divide by the pooled std + eps) or ``"batch"``
        (divide by the std of the whole batch + eps).
    eps
        Added to the std before dividing, > 0; TRL uses 1e-4.

    Returns
    -------
    numpy.ndarray
        float64 advantages of shape (P, M, G).
    """
    r = _check_rewards(rewards)  # (P, M, G)
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(
            f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}; got {scale_rewards!r}"
        )
    if not (isinstance(eps, (int, float, np.floating)) and 0 < eps < np.inf):
        # eps > 0 keeps every division finite: a zero std then gives 0 / eps, never x / 0 = inf.
        raise ConfigError(f"eps must be a finite number > 0; got {eps!r}")
    P, M, G = r.shape
    # C-order reshape: the flat order of TRL's `rewards.view(-1, num_generations)`, where expert m's
    # block is candidates [m*G, (m+1)*G) of the question.
    size = M * G if pooling == "joint" else G
    groups = r.reshape(-1, size)  # (P, M*G) joint, (P*M, G) per_expert
    mean, _ = _nan_mean_count(groups, axis=1)  # (groups, 1)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN / 0 cases are zeroed below
        advantages = groups - mean  # (groups, size)
        if scale_rewards == "group":
            advantages = advantages / (_nan_std(groups, axis=1) + eps)  # (groups, 1) std
        elif scale_rewards == "batch":
            advantages = advantages / (_nan_std(groups, axis=None) + eps)  # (1, 1) std
    # TRL: `advantages = torch.nan_to_num(advantages, nan=0.0)`; with finite rewards and eps > 0,
    # NaN (from NaN rewards or a NaN std) is the only non-finite value that can occur here.
    advantages = np.where(np.isnan(advantages), 0.0, advantages)  # (groups, size)
    return advantages.reshape(P, M, G)


def _check_rewards(rewards: ArrayLike) -> NDArray[np.float64]:
    """Return rewards as a float64 (P, M, G) array, or raise a ConfigError saying what is wrong."""
    try:
        r = np.asarray(rewards, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"rewards must be numeric with shape (P, M, G): {exc}") from exc
    if r.ndim != 3 or r.shape[1] == 0 or r.shape[2] == 0:
        raise ConfigError(
            "rewards must have shape (P, M, G) = (questions, experts, candidates) with M, G >= 1; "
            f"got shape {r.shape}"
        )
    if np.isinf(r).any():
        raise ConfigError("rewards must be finite or NaN (NaN marks a missing reply); got inf")
    return r


def _nan_mean_count(
    x: NDArray[np.float64], axis: int | None
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """NaN-aware mean and count of valid entries, kept dims; mean is NaN where count is 0."""
    valid = ~np.isnan(x)
    count = valid.sum(axis=axis, keepdims=True)
    total = np.where(valid, x, 0.0).sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count  # 0/0 = NaN for an all-NaN group, as torch.nanmean


def _nan_std(x: NDArray[np.float64], axis: int | None) -> NDArray[np.float64]:
    """TRL's `nanstd`: NaN-aware unbiased std (ddof=1), NaN where fewer than 2 valid entries."""
    mean, count = _nan_mean_count(x, axis)
    squares = np.where(np.isnan(x), 0.0, (x - mean) ** 2).sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.where(count > 1, squares / (count - 1), np.nan)  # Bessel's correction
    return np.sqrt(variance)
