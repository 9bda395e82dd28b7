"""The competence threshold (core.selection.competent_counts) against a slow loop, on random
competences; and the routing it feeds keeps the paper's behaviour at threshold 0."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedgrpo.core.selection import competent_counts, select_experts

competence_matrices = st.tuples(st.integers(1, 6), st.integers(1, 5)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.05, 0.25, 0.5, 0.75, 1.0])))


def _slow_counts(chosen_competence, threshold):
    counts = []
    for row in chosen_competence:
        n = 0
        while n < len(row) and row[n] >= threshold:
            n += 1
        counts.append(max(n, 1))
    return counts


@settings(max_examples=300, deadline=None)
@given(competence_matrices, st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]))
def test_counts_match_the_slow_loop(c, threshold):
    np.testing.assert_array_equal(competent_counts(c, threshold), _slow_counts(c, threshold))


@settings(max_examples=200, deadline=None)
@given(competence_matrices, st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_on_top_m_selections_every_kept_expert_clears_the_threshold_or_is_the_best(c, threshold):
    m = min(2, c.shape[1])
    chosen = select_experts(c, m, method="graph")  # (P, m), best first
    chosen_competence = np.take_along_axis(c, chosen, axis=1)
    counts = competent_counts(chosen_competence, threshold)
    for row, n in zip(chosen_competence, counts):
        assert 1 <= n <= m
        assert all(x >= threshold for x in row[1:n])  # beyond the best, only experts that clear it
        # Top-M is sorted, so nothing left out clears the threshold unless the prefix is full.
        assert n == m or row[n] < threshold
    if threshold == 0.0:
        assert (counts == m).all()  # threshold 0 is the paper's fixed top-M
