"""Properties of federated advantages on random small reward arrays with random NaN masks.

Notation as in fedgrpo.core.advantage: P questions, M experts, G candidates per expert. Rewards lie
in [0, 1]; NaN marks a failed reply.

Run: .venv/bin/python -m pytest tests/property/test_advantage_properties.py
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedgrpo.core.advantage import federated_advantages
from fedgrpo.core.aggregate import TRIM, aggregate_replicated

SCALES = ("none", "group", "batch")
POOLINGS = ("joint", "per_expert")
# No deadline: the machine is shared, and a slow example is not a failure.
SETTINGS = settings(max_examples=60, deadline=None)

# Subnormals are excluded: a std near 1e-308 is a floating-point curiosity, not a reward pattern.
unit_floats = st.floats(0.0, 1.0, allow_subnormal=False)
# Multiples of 1/20: a non-constant group then has std >= 0.014, so a tiny eps is negligible.
grid_floats = st.integers(0, 20).map(lambda k: k / 20)


@st.composite
def reward_arrays(draw, elements=unit_floats, M=None):
    """(P, M, G) rewards in [0, 1] with a random NaN mask."""
    shape = (draw(st.integers(1, 3)), M or draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    values = draw(hnp.arrays(np.float64, shape, elements=elements))
    missing = draw(hnp.arrays(np.bool_, shape))
    return np.where(missing, np.nan, values)


@given(reward_arrays(), st.sampled_from(POOLINGS), st.sampled_from(SCALES))
@SETTINGS
def test_advantages_have_zero_mean_over_valid_rewards(rewards, pooling, scale):
    # Group-relative: within each pooled group the advantages of valid rewards sum to zero, and
    # NaN rewards get exactly 0.
    adv = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
    assert np.all(adv[np.isnan(rewards)] == 0.0)
    size = rewards.shape[1] * rewards.shape[2] if pooling == "joint" else rewards.shape[2]
    for group_rewards, group_adv in zip(rewards.reshape(-1, size), adv.reshape(-1, size)):
        valid = ~np.isnan(group_rewards)
        if valid.any():
            assert abs(group_adv[valid].mean()) < 1e-9


@given(reward_arrays(), st.sampled_from(POOLINGS), st.sampled_from(("none", "group")),
       st.integers(0, 2), st.floats(-5.0, 5.0))
@SETTINGS
def test_adding_a_constant_to_a_question_changes_nothing(rewards, pooling, scale, p, shift):
    # Only differences from the group mean matter; "batch" is excluded because shifting one
    # question alone changes the batch std.
    p = p % rewards.shape[0]
    shifted = rewards.copy()
    shifted[p] += shift
    before = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
    after = federated_advantages(shifted, pooling=pooling, scale_rewards=scale)
    np.testing.assert_allclose(after, before, atol=1e-8)


@given(reward_arrays(elements=grid_floats), st.sampled_from(POOLINGS), st.integers(0, 2),
       st.floats(0.1, 10.0))
@SETTINGS
def test_scaling_a_question_changes_nothing_with_group_std(rewards, pooling, p, c):
    # With scale_rewards="group", (c*r - c*mean) / (c*std) = (r - mean) / std. eps breaks this only
    # by eps/std, so use eps = 1e-8 against grid rewards (non-constant std >= 0.014).
    p = p % rewards.shape[0]
    scaled = rewards.copy()
    scaled[p] *= c
    before = federated_advantages(rewards, pooling=pooling, scale_rewards="group", eps=1e-8)
    after = federated_advantages(scaled, pooling=pooling, scale_rewards="group", eps=1e-8)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-6)


@given(reward_arrays(), st.sampled_from(POOLINGS), st.sampled_from(SCALES), st.floats(0.1, 10.0))
@SETTINGS
def test_scaling_rewards_and_eps_together_changes_nothing(rewards, pooling, scale, c):
    # The exact form of scale invariance: (c*d) / (c*std + c*eps) = d / (std + eps), for every
    # scaling mode when the whole batch is scaled ("none" scales by c and is checked as such).
    before = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
    after = federated_advantages(rewards * c, pooling=pooling, scale_rewards=scale, eps=1e-4 * c)
    expected = before * c if scale == "none" else before
    np.testing.assert_allclose(after, expected, rtol=1e-9, atol=1e-9)


@given(reward_arrays(), st.sampled_from(SCALES), st.randoms(use_true_random=False))
@SETTINGS
def test_permuting_experts_permutes_advantages(rewards, scale, random):
    # Joint pooling treats the M experts symmetrically: expert order is only a layout.
    order = list(range(rewards.shape[1]))
    random.shuffle(order)
    before = federated_advantages(rewards, pooling="joint", scale_rewards=scale)
    after = federated_advantages(rewards[:, order], pooling="joint", scale_rewards=scale)
    np.testing.assert_allclose(after, before[:, order], atol=1e-9)


@given(reward_arrays(), st.sampled_from(POOLINGS), st.sampled_from(SCALES), st.integers(0, 2))
@SETTINGS
def test_all_nan_question_gives_zero(rewards, pooling, scale, p):
    # A question whose experts all failed contributes nothing; with a per-group std the other
    # questions do not notice it either.
    p = p % rewards.shape[0]
    rewards = rewards.copy()
    before = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
    rewards[p] = np.nan
    after = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
    assert np.all(after[p] == 0.0)
    if scale != "batch":
        others = np.arange(rewards.shape[0]) != p
        np.testing.assert_array_equal(after[others], before[others])


def _plain_grpo(rewards: np.ndarray, scale: str, eps: float = 1e-4) -> np.ndarray:
    """Reference GRPO over (P, G) rewards, one Python loop per question, as TRL defines it."""

    def std(values: list[float]) -> float:
        if len(values) < 2:
            return math.nan
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    batch_std = std([v for v in rewards.ravel().tolist() if not math.isnan(v)])
    out = np.zeros_like(rewards)
    for p, row in enumerate(rewards.tolist()):
        valid = [v for v in row if not math.isnan(v)]
        for g, value in enumerate(row):
            if math.isnan(value):
                continue  # a failed reply gets advantage 0
            advantage = value - sum(valid) / len(valid)
            if scale != "none":
                advantage /= (std(valid) if scale == "group" else batch_std) + eps
            out[p, g] = 0.0 if math.isnan(advantage) else advantage
    return out


@given(reward_arrays(M=1), st.sampled_from(POOLINGS), st.sampled_from(SCALES))
@SETTINGS
def test_one_expert_equals_plain_grpo(rewards, pooling, scale):
    # M = 1: the federated group is the expert's G candidates, so FedGRPO is GRPO.
    adv = federated_advantages(rewards, pooling=pooling, scale_rewards=scale)
    np.testing.assert_allclose(adv[:, 0], _plain_grpo(rewards[:, 0], scale), rtol=1e-12, atol=1e-12)


# --- robust aggregation of replicated scores (core.aggregate) ------------------------------------------


def _slow_aggregate(row, method):
    values = sorted(v for v in row if not math.isnan(v))
    if not values:
        return math.nan
    if method == "mean":
        return sum(values) / len(values)
    if method == "median":
        k = len(values)
        return values[k // 2] if k % 2 else (values[k // 2 - 1] + values[k // 2]) / 2
    cut = math.floor(TRIM * len(values))
    kept = values[cut:len(values) - cut]
    return sum(kept) / len(kept)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.one_of(st.just(math.nan), st.floats(0, 1))),
       st.sampled_from(["mean", "median", "trimmed_mean"]))
def test_aggregate_replicated_matches_a_slow_loop(matrix, method):
    got = aggregate_replicated(matrix, method)
    for value, row in zip(got, matrix):
        expected = _slow_aggregate(row, method)
        assert (math.isnan(value) and math.isnan(expected)) or math.isclose(value, expected, abs_tol=1e-12)
