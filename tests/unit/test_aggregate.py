"""core.aggregate: competence shrinkage of one question's expert rewards and peer agreement on shared
candidates, hand-computed cases and slow references over random inputs."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.core.aggregate import peer_agreement, shrink_to_competent_mean
from fedgrpo.errors import ConfigError


def test_a_fully_competent_expert_passes_unchanged_and_an_incompetent_one_moves_to_the_mean():
    got = shrink_to_competent_mean([1.0, 0.0, 1.0, 1.0], [slice(0, 2), slice(2, 4)], [1.0, 0.0])
    # r_bar = (1*(1 + 0) + 0*(1 + 1)) / (1*2 + 0*2) = 0.5
    np.testing.assert_allclose(got, [1.0, 0.0, 0.5, 0.5])


def test_partial_competence_is_a_convex_mix():
    got = shrink_to_competent_mean([1.0, 0.0, 0.0, 1.0], [slice(0, 2), slice(2, 4)], [0.8, 0.4])
    r_bar = (0.8 * 1.0 + 0.4 * 1.0) / (0.8 * 2 + 0.4 * 2)  # = 0.5
    np.testing.assert_allclose(got, [0.8 + 0.2 * r_bar, 0.2 * r_bar, 0.6 * r_bar, 0.4 + 0.6 * r_bar])


def test_missing_rewards_stay_missing_and_are_left_out_of_the_mean():
    got = shrink_to_competent_mean([1.0, math.nan, 0.0, 0.0], [slice(0, 2), slice(2, 4)], [1.0, 0.5])
    r_bar = (1.0 * 1.0 + 0.5 * 0.0) / (1.0 * 1 + 0.5 * 2)
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3]], [1.0, 0.5 * r_bar, 0.5 * r_bar])


def test_no_competent_expert_leaves_no_signal():
    got = shrink_to_competent_mean([1.0, 0.0, 1.0, 0.0], [slice(0, 2), slice(2, 4)], [0.0, 0.0])
    np.testing.assert_allclose(got, [0.5] * 4)  # every reward at the plain mean: advantages 0


def test_bad_competences_are_refused():
    with pytest.raises(ConfigError, match="one competence per block"):
        shrink_to_competent_mean([1.0, 0.0], [slice(0, 2)], [0.5, 0.5])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        shrink_to_competent_mean([1.0, 0.0], [slice(0, 2)], [1.5])


def _slow(raw, sizes, competence):
    """The formula in the module docstring, one candidate at a time."""
    owner = [b for b, n in enumerate(sizes) for _ in range(n)]
    num = sum(competence[owner[i]] * r for i, r in enumerate(raw) if not math.isnan(r))
    den = sum(competence[owner[i]] for i, r in enumerate(raw) if not math.isnan(r))
    present = [r for r in raw if not math.isnan(r)]
    r_bar = num / den if den > 0 else (sum(present) / len(present) if present else 0.0)
    return [math.nan if math.isnan(r) else competence[owner[i]] * r + (1 - competence[owner[i]]) * r_bar
            for i, r in enumerate(raw)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(lambda sizes: st.tuples(
    st.just(sizes),
    st.lists(st.sampled_from([0.0, 1.0, math.nan, 0.5]), min_size=sum(sizes), max_size=sum(sizes)),
    st.lists(st.floats(0, 1), min_size=len(sizes), max_size=len(sizes)))))
def test_matches_the_slow_reference(case):
    sizes, raw, competence = case
    bounds = np.cumsum([0, *sizes])
    blocks = [slice(int(a), int(b)) for a, b in zip(bounds, bounds[1:])]
    got = shrink_to_competent_mean(raw, blocks, competence)
    np.testing.assert_allclose(got, _slow(raw, sizes, competence), equal_nan=True, atol=1e-12)


def _peer_reference(matrix):
    """Each expert's (agreed, compared), one candidate and one expert at a time, in plain Python."""
    m = len(matrix[0])
    out = [[0, 0] for _ in range(m)]
    for row in matrix:
        for j, value in enumerate(row):
            others = [x for k, x in enumerate(row) if k != j and not math.isnan(x)]
            if math.isnan(value) or len(others) < 2 or statistics.median(others) == 0.5:
                continue
            out[j][1] += 1
            out[j][0] += (value > 0.5) == (statistics.median(others) > 0.5)
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 5).flatmap(lambda m: st.lists(
    st.lists(st.sampled_from([0.0, 1.0, 0.25, 0.75, math.nan]), min_size=m, max_size=m), min_size=1, max_size=6)))
def test_peer_agreement_matches_the_slow_reference(matrix):
    agreed, compared = peer_agreement(matrix)
    assert [[int(a), int(c)] for a, c in zip(agreed, compared)] == _peer_reference(matrix)


def test_an_inverting_expert_disagrees_with_every_honest_majority():
    honest = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    matrix = np.stack([honest, honest, honest, 1.0 - honest], axis=1)
    agreed, compared = peer_agreement(matrix)
    assert agreed.tolist() == [5, 5, 5, 0] and compared.tolist() == [5, 5, 5, 5]
