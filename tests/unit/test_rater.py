"""core.rater: the one-coin rater maths of the re-check, hand-computed cases and slow references
(one value, one outcome, one rater at a time) over random inputs.

Run: pytest tests/unit/test_rater.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.core.rater import (
    INVERTED,
    PRIOR_AGREE,
    PRIOR_DISAGREE,
    TRUSTED,
    UNINFORMATIVE,
    one_coin_accuracy,
    probe_agreement,
    rater_reading,
    released_accuracy,
)

probabilities = st.floats(0.0, 1.0)


# --- probe_agreement -------------------------------------------------------------------------------

def _agreement_reference(released, truth):
    agree = total = 0
    for value, true in zip(released, truth):
        if math.isnan(value):
            continue  # no reward: no evidence either way
        total += 1
        agree += value == true
    return agree, total


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 0.5, math.nan]), st.sampled_from([0.0, 1.0])), max_size=12))
def test_probe_agreement_matches_the_slow_reference(pairs):
    released, truth = [r for r, _ in pairs], [t for _, t in pairs]
    assert probe_agreement(released, truth) == _agreement_reference(released, truth)


def test_a_label_without_its_truth_is_a_bug_not_a_silent_truncation():
    with pytest.raises(ValueError, match="one truth per label"):
        probe_agreement([1.0, 0.0], [1.0])


# --- one_coin_accuracy -----------------------------------------------------------------------------

def _posterior_mean_reference(agree, total):
    """The Beta posterior updated one probe value at a time (conjugacy), then its mean."""
    alpha, beta = PRIOR_AGREE, PRIOR_DISAGREE
    for i in range(total):
        if i < agree:
            alpha += 1
        else:
            beta += 1
    return alpha / (alpha + beta)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_one_coin_accuracy_matches_the_one_value_at_a_time_update(case):
    agree, total = case
    assert one_coin_accuracy(agree, total) == pytest.approx(_posterior_mean_reference(agree, total), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), min_size=1, max_size=6))
def test_one_coin_accuracy_of_many_raters_is_each_raters_own(cases):
    got = one_coin_accuracy([a for a, _ in cases], [n for _, n in cases])
    np.testing.assert_allclose(got, [_posterior_mean_reference(a, n) for a, n in cases], atol=1e-12)


def test_one_coin_accuracy_starts_at_its_prior_and_follows_the_evidence():
    assert one_coin_accuracy(0, 0) == pytest.approx(2 / 3)  # Beta(2, 1): it passed calibration
    assert one_coin_accuracy(100, 100) > 0.97 and one_coin_accuracy(0, 100) < 0.03
    assert math.isclose(one_coin_accuracy(5, 10), 7 / 13)


# --- released_accuracy -----------------------------------------------------------------------------

def _released_reference(accuracy, keep):
    """Sum over the four outcomes (the label agrees or not) x (randomised response keeps it or not)."""
    total = 0.0
    for agrees, p_agree in ((True, accuracy), (False, 1.0 - accuracy)):
        for kept, p_kept in ((True, keep), (False, 1.0 - keep)):
            if agrees == kept:  # a kept right label, or a flipped wrong one, agrees with the truth
                total += p_agree * p_kept
    return total


@settings(max_examples=300, deadline=None)
@given(probabilities, probabilities)
def test_released_accuracy_matches_the_sum_over_outcomes(accuracy, keep):
    assert released_accuracy(accuracy, keep) == pytest.approx(_released_reference(accuracy, keep), abs=1e-12)


def test_without_noise_the_released_accuracy_is_the_accuracy_and_a_fair_coin_erases_it():
    assert released_accuracy(0.9, 1.0) == pytest.approx(0.9)
    assert released_accuracy(0.9, 0.5) == pytest.approx(0.5)  # keep 1/2: the label says nothing


# --- rater_reading ---------------------------------------------------------------------------------

def _reading_reference(accuracy, threshold, keep):
    """The re-check's rule as first written: flag below the threshold on the released scale; of the
    flagged, read as inverted only those as far below chance as the threshold is above it."""
    high = 0.5 + (threshold - 0.5) * (2 * keep - 1)
    low = 1.0 - high
    if accuracy >= high:
        return TRUSTED
    return INVERTED if accuracy < low else UNINFORMATIVE


@settings(max_examples=300, deadline=None)
@given(st.lists(probabilities, min_size=1, max_size=6), probabilities, st.floats(0.5, 1.0))
def test_rater_reading_matches_the_slow_reference(accuracies, threshold, keep):
    got = rater_reading(accuracies, threshold, keep)
    assert got.tolist() == [_reading_reference(a, threshold, keep) for a in accuracies]


def test_an_honest_rater_under_randomised_response_is_trusted_and_an_inverting_one_read_inverted():
    keep = 0.8  # randomised response keeps 80% of the labels
    honest, inverting = released_accuracy(1.0, keep), released_accuracy(0.0, keep)
    assert rater_reading([honest, inverting, 0.5], threshold=0.75, keep=keep).tolist() == [
        TRUSTED, INVERTED, UNINFORMATIVE]
    # Without noise, 0.7 is below the threshold 0.75 and above its mirror 0.25: not read at all.
    assert int(rater_reading(0.7, threshold=0.75)) == UNINFORMATIVE
