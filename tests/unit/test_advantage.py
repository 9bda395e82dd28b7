"""Federated advantages: hand-computed cases, a slow loop reference, and TRL 1.16's own formula.

Notation as in fedgrpo.core.advantage: P questions, M experts, G candidates per expert.

Run: .venv/bin/python -m pytest tests/unit/test_advantage.py
"""

from __future__ import annotations

import doctest
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from fedgrpo.core import advantage
from fedgrpo.core.advantage import federated_advantages
from fedgrpo.errors import ConfigError

SCALES = ("none", "group", "batch")
POOLINGS = ("joint", "per_expert")


def _loop_reference(rewards: np.ndarray, pooling: str, scale: str, eps: float = 1e-4) -> np.ndarray:
    """Slow, explicit definition: one Python loop per group, unbiased NaN-aware std, NaN -> 0."""

    def stats(values: list[float]) -> tuple[float, float]:
        valid = [v for v in values if not math.isnan(v)]
        mean = sum(valid) / len(valid) if valid else math.nan
        if len(valid) < 2:
            return mean, math.nan  # TRL's nanstd is NaN below two valid values
        return mean, math.sqrt(sum((v - mean) ** 2 for v in valid) / (len(valid) - 1))

    P, M, G = rewards.shape
    _, batch_std = stats(rewards.ravel().tolist())
    out = np.zeros_like(rewards, dtype=float)
    for p in range(P):
        for m in range(M):
            for g in range(G):
                block = rewards[p] if pooling == "joint" else rewards[p, m]
                mean, group_std = stats(block.ravel().tolist())
                value = rewards[p, m, g] - mean
                if scale == "group":
                    value = value / (group_std + eps)
                elif scale == "batch":
                    value = value / (batch_std + eps)
                out[p, m, g] = 0.0 if math.isnan(value) else value
    return out


def _random_rewards(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    rewards = rng.random(shape)
    rewards[rng.random(shape) < 0.25] = np.nan  # failed replies
    if shape[0] > 1:
        rewards[0] = np.nan  # an all-NaN question
    return rewards


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("scale", SCALES)
def test_vectorised_code_equals_loop_reference(pooling, scale):
    # The vectorised reshape/where code must compute exactly the per-group definition, NaN too.
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(int(n) for n in rng.integers(1, 5, size=3))
        rewards = _random_rewards(rng, shape)
        expected = _loop_reference(rewards, pooling, scale)
        got = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_joint_pooling_centres_over_all_candidates_of_a_question():
    # Joint: one mean over the M*G = 4 rewards, so a lenient expert's whole block is lifted.
    rewards = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    got = federated_advantages(rewards, pooling="joint", scale_rewards="none")
    np.testing.assert_array_equal(got, [[[0.5, 0.5], [-0.5, -0.5]]])


def test_per_expert_pooling_removes_expert_bias():
    # Per expert: each block of G has its own mean, so uniformly lenient or strict experts give 0.
    rewards = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    got = federated_advantages(rewards, pooling="per_expert", scale_rewards="group")
    np.testing.assert_array_equal(got, np.zeros((1, 2, 2)))


def test_group_std_is_unbiased_like_trl():
    # TRL's nanstd applies Bessel's correction: std([1, 0]) = sqrt(0.5), not the paper's 0.5.
    got = federated_advantages(np.array([[[1.0, 0.0]]]), scale_rewards="group")
    expected = 0.5 / (math.sqrt(0.5) + 1e-4)
    np.testing.assert_allclose(got, [[[expected, -expected]]], rtol=1e-15)


def test_batch_scale_centres_per_group_and_divides_by_batch_std():
    # "batch" keeps the group mean but one std over all rewards of the step (TRL: nanstd(rewards)).
    rewards = np.array([[[1.0, 0.0]], [[1.0, 1.0]]])  # (P=2, M=1, G=2)
    batch_std = np.std([1.0, 0.0, 1.0, 1.0], ddof=1)
    got = federated_advantages(rewards, scale_rewards="batch")
    expected = np.array([[[0.5, -0.5]], [[0.0, 0.0]]]) / (batch_std + 1e-4)
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_nan_reward_gets_zero_and_is_left_out_of_the_mean():
    # A failed reply must neither receive credit nor drag the baseline towards 0.
    rewards = np.array([[[1.0, 0.0], [np.nan, 0.5]]])
    got = federated_advantages(rewards, scale_rewards="none")
    np.testing.assert_allclose(got, [[[0.5, -0.5], [0.0, 0.0]]], atol=1e-15)


def test_all_nan_question_gives_zeros_and_leaves_others_alone():
    # A question with no reward at all carries no signal; the other question is unaffected.
    rewards = np.array([[[np.nan, np.nan]], [[1.0, 0.0]]])
    got = federated_advantages(rewards, scale_rewards="group")
    alone = federated_advantages(rewards[1:], scale_rewards="group")
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_array_equal(got[1], alone[0])


def test_single_valid_reward_gives_zero():
    # One valid reward: mean is that reward and TRL's std is NaN, so the advantage is 0, not NaN.
    for scale in SCALES:
        got = federated_advantages(np.array([[[np.nan, 0.7]]]), scale_rewards=scale)
        np.testing.assert_array_equal(got, 0.0)


def test_equal_rewards_give_no_signal():
    # A group whose rewards are all equal teaches nothing (TRL logs it as frac_reward_zero_std).
    got = federated_advantages(np.full((1, 2, 3), 0.25), scale_rewards="group")
    np.testing.assert_array_equal(got, 0.0)


def test_one_expert_is_plain_grpo():
    # M = 1: both poolings reduce to GRPO over the G candidates: (r - mean) / (unbiased std + eps).
    rewards = np.array([[[1.0, 0.0, 0.0, 1.0]]])
    std = math.sqrt(1 / 3)
    expected = np.array([[[0.5, -0.5, -0.5, 0.5]]]) / (std + 1e-4)
    for pooling in POOLINGS:
        got = federated_advantages(rewards, pooling=pooling, scale_rewards="group")
        np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_accepts_nested_lists_and_does_not_modify_input():
    # Callers pass lists from JSON or arrays they keep using; both work, the array is untouched.
    rewards = np.array([[[1.0, np.nan]]])
    before = rewards.copy()
    got = federated_advantages(rewards.tolist())
    assert got.dtype == np.float64 and got.shape == (1, 1, 2)
    np.testing.assert_array_equal(rewards, before)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 3)), np.zeros((1, 2, 3, 4)), np.float64(1.0), np.zeros((1, 0, 2))]
)
def test_rewards_must_be_three_dimensional(bad):
    # A flat TRL-order vector must be reshaped to (P, M, G) by the caller; guessing M, G is unsafe.
    with pytest.raises(ConfigError, match=r"\(P, M, G\)"):
        federated_advantages(bad)


def test_unknown_pooling_names_the_options():
    with pytest.raises(ConfigError, match="joint, per_expert"):
        federated_advantages(np.zeros((1, 1, 2)), pooling="literal")  # type: ignore[arg-type]


def test_unknown_scale_names_the_options():
    with pytest.raises(ConfigError, match="none, group, batch"):
        federated_advantages(np.zeros((1, 1, 2)), scale_rewards=True)  # type: ignore[arg-type]


def test_infinite_reward_is_rejected():
    # TRL would silently turn inf into float max; an infinite reward is a scorer bug.
    with pytest.raises(ConfigError, match="finite or NaN"):
        federated_advantages(np.array([[[np.inf, 0.0]]]))


@pytest.mark.parametrize("eps", [-1.0, 0.0, float("nan"), float("inf")])
def test_eps_must_be_positive_and_finite(eps):
    # eps = 0 would turn a zero std into a division by zero (inf advantages).
    with pytest.raises(ConfigError, match="eps"):
        federated_advantages(np.zeros((1, 1, 2)), eps=eps)


def test_docstring_example_runs():
    # The module docstring's example is documentation users copy; it must stay correct.
    result = doctest.testmod(advantage)
    assert result.attempted > 0 and result.failed == 0


# --- TRL 1.16's own formula ---------------------------------------------------------------------

# Copied from trl==1.16.0, trl/trainer/utils.py, `nanstd` (body unchanged).
def _trl_nanstd(tensor, dim=None, keepdim=False):
    import torch

    mean = torch.nanmean(tensor, dim=dim, keepdim=True)
    variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)  # count of non-NaN values
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance *= correction  # Bessel's correction
    std = torch.sqrt(variance)
    if keepdim:
        return std
    return std.squeeze(dim) if dim is not None else std.squeeze()


# Copied from trl==1.16.0, trl/trainer/grpo_trainer.py, GRPOTrainer._generate_and_score_completions,
# branch multi_objective_aggregation == "sum_then_normalize" (`self.` removed, nanstd as above).
def _trl_advantages(rewards, num_generations, scale_rewards):
    import torch

    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = _trl_nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        if rewards.numel() > 1:
            std_rewards = _trl_nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    advantages = torch.nan_to_num(advantages, nan=0.0)
    return advantages


# TRL's Bessel factor `count / (count - 1)` divides two integer tensors, which torch does in
# float32 even when the rewards are float64, so float64 agreement stops near 1e-8 relative. TRL's
# rewards are float32 in practice; that comparison needs float32 tolerances.
TRL_TOLERANCE = {"float64": dict(rtol=1e-7, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", sorted(TRL_TOLERANCE))
@pytest.mark.parametrize("scale", SCALES)
def test_joint_pooling_equals_trl_with_num_generations_m_times_g(scale, dtype):
    # The M*G route (flower-trl-notes 2.5): TRL with num_generations = M*G over the flat (P*M*G)
    # rewards, expert m's block at [m*G, (m+1)*G) of each question, must give our joint advantages.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for P, M, G in [(1, 1, 1), (1, 2, 1), (3, 2, 4), (4, 3, 2), (2, 1, 5)]:
        rewards = _random_rewards(rng, (P, M, G)).astype(dtype)
        flat = torch.tensor(rewards.reshape(-1))  # (P*M*G,) in TRL's order
        trl = _trl_advantages(flat, M * G, scale).numpy().reshape(P, M, G)
        ours = federated_advantages(rewards, pooling="joint", scale_rewards=scale)
        np.testing.assert_allclose(ours, trl, **TRL_TOLERANCE[dtype])


def test_copied_trl_lines_are_still_in_installed_trl():
    # Guards the copy above: if a TRL upgrade changes the formula, this fails before silent drift.
    spec = importlib.util.find_spec("trl")  # locates trl without importing it (imports are slow)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    trainer = (root / "trainer" / "grpo_trainer.py").read_text(encoding="utf-8")
    utils = (root / "trainer" / "utils.py").read_text(encoding="utf-8")
    for line in [
        "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
        "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
        "std_rewards = nanstd(rewards).expand_as(rewards)",
        "advantages = rewards - mean_grouped_rewards",
        "advantages = advantages / (std_rewards + 1e-4)",
        "advantages = torch.nan_to_num(advantages, nan=0.0)",
    ]:
        assert line in trainer, line
    for line in [
        "variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)",
        "correction = count / (count - 1)",
    ]:
        assert line in utils, line
