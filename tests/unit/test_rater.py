"""core.rater: the one-coin rater maths of the re-check, hand-computed cases and slow references
(one value, one outcome, one rater, one item at a time; the incomplete beta by its binomial sum and
by integrating the density) over random inputs.

Run: pytest tests/unit/test_rater.py
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.core.rater import (
    CONFIDENCE,
    INVERTED,
    PRIOR_AGREE,
    PRIOR_DISAGREE,
    TRUSTED,
    UNINFORMATIVE,
    as_labels,
    beta_cdf,
    one_coin_accuracy,
    one_coin_dawid_skene,
    posterior_below,
    probe_agreement,
    rater_reading,
    released_accuracy,
    surely_above,
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


# --- beta_cdf and posterior_below -------------------------------------------------------------------

def _beta_cdf_reference(x, a, b):
    """For integer a, b: I_x(a, b) = P(Binomial(a + b - 1, x) >= a), summed term by term."""
    n = a + b - 1
    return sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), probabilities)
def test_beta_cdf_matches_the_binomial_sum_for_integer_parameters(a, b, x):
    assert beta_cdf(x, a, b) == pytest.approx(_beta_cdf_reference(x, a, b), abs=1e-10)


@settings(max_examples=100, deadline=None)
@given(st.floats(1.0, 60.0), st.floats(1.0, 60.0), st.floats(0.01, 0.99))
def test_beta_cdf_matches_a_midpoint_integral_of_the_density(a, b, x):
    # Fractional parameters (Dawid-Skene's expected counts) of posteriors, at least the Beta(2, 1)
    # prior's: the density integrated numerically over [0, x] and [x, 1] (a midpoint rule on each).
    cells = (np.arange(100_000) + 0.5) / 100_000
    left, right = x * cells, x + (1 - x) * cells

    def log_density(t):
        return (a - 1) * np.log(t) + (b - 1) * np.log1p(-t)

    top = max(log_density(left).max(), log_density(right).max())
    below = x * np.exp(log_density(left) - top).mean()
    above = (1 - x) * np.exp(log_density(right) - top).mean()
    assert beta_cdf(x, a, b) == pytest.approx(below / (below + above), abs=1e-7)


def test_beta_cdf_refuses_parameters_outside_its_domain():
    with pytest.raises(ValueError, match="must be > 0"):
        beta_cdf(0.5, 0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 80).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), probabilities)
def test_posterior_below_is_the_beta_posteriors_cdf(case, level):
    agree, total = case
    expected = _beta_cdf_reference(level, int(PRIOR_AGREE) + agree, int(PRIOR_DISAGREE) + total - agree)
    assert posterior_below(agree, total, level) == pytest.approx(expected, abs=1e-10)


# --- rater_reading and surely_above ------------------------------------------------------------------

def _reading_reference(agree, total, threshold, keep):
    """The rule in words: flagged when P(accuracy < the threshold on the released scale) reaches the
    confidence, by the binomial sum; then inverted when the posterior mean is below 1/2."""
    level = 0.5 + (threshold - 0.5) * (2 * keep - 1)
    below = _beta_cdf_reference(level, 2 + agree, 1 + total - agree)
    if below < CONFIDENCE:
        return TRUSTED
    return INVERTED if (agree + 2) / (total + 3) < 0.5 else UNINFORMATIVE


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 80).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), st.floats(0.05, 0.95),
       st.floats(0.5, 1.0))
def test_rater_reading_matches_the_slow_reference(case, threshold, keep):
    agree, total = case
    expected = _reading_reference(agree, total, threshold, keep)
    level = 0.5 + (threshold - 0.5) * (2 * keep - 1)
    near_the_edge = abs(_beta_cdf_reference(level, 2 + agree, 1 + total - agree) - CONFIDENCE) < 1e-9
    if not near_the_edge:  # a bound exactly at the confidence may round either way
        assert rater_reading(agree, total, threshold, keep) == expected


def test_an_honest_rater_is_trusted_an_inverting_one_read_inverted_and_a_coin_read_not_at_all():
    assert rater_reading(40, 40, 0.7) == TRUSTED
    assert rater_reading(33, 40, 0.7) == TRUSTED  # 0.83, the weakest honest default expert: never flagged
    assert rater_reading(0, 6, 0.7) == INVERTED  # six misses in a row: P(a < 0.7) = 0.9987
    assert rater_reading(0, 4, 0.7) == TRUSTED  # four: 0.989, not yet sure
    assert rater_reading(30, 60, 0.7) == UNINFORMATIVE  # a fair coin, once enough values say so
    keep = 0.8  # under randomised response an honest rater agrees with probability keep, not 1
    assert rater_reading(64, 80, 0.75, keep) == TRUSTED and rater_reading(16, 80, 0.75, keep) == INVERTED


def test_surely_above_is_the_flags_mirror_image():
    # Proven (may vouch for others in spot checks) only when surely above the threshold.
    assert surely_above(40, 40, 0.7) and not surely_above(30, 40, 0.7) and not surely_above(5, 5, 0.7)
    # An inverted rater stops being read inverted only once it is surely above 1 - threshold.
    assert not surely_above(0, 40, 0.3) and not surely_above(8, 40, 0.3)  # 0.2: still inverting
    assert surely_above(20, 40, 0.3)  # a coin: nothing to recover by inverting it


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 80).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), st.floats(0.05, 0.95),
       st.floats(0.5, 1.0))
def test_surely_above_matches_the_binomial_sum(case, threshold, keep):
    agree, total = case
    level = 0.5 + (threshold - 0.5) * (2 * keep - 1)
    above = 1 - _beta_cdf_reference(level, 2 + agree, 1 + total - agree)
    if abs(above - CONFIDENCE) > 1e-9:
        assert surely_above(agree, total, threshold, keep) == (above >= CONFIDENCE)


# --- one_coin_dawid_skene ------------------------------------------------------------------------------

def _dawid_skene_reference(agree, total, pairs, iterations=500, tolerance=1e-12):
    """The same EM over explicit items, one at a time: each pair count expanded into that many items
    of two labels, each anchored rater's agreements kept as counts."""
    raters = len(agree)
    items = [(j, k, x, y) for j in range(raters) for k in range(raters) for x in (0, 1) for y in (0, 1)
             for _ in range(int(pairs[j][k][x][y]))]
    accuracy = [(agree[j] + 2) / (total[j] + 3) for j in range(raters)]
    prior_true = 0.5
    expected, compared = list(agree), list(total)
    for _ in range(iterations):
        expected, compared = [float(a) for a in agree], [float(n) for n in total]
        believed = 0.0
        for j, k, x, y in items:
            def p(label, truth, a):
                return a if label == truth else 1 - a

            yes = prior_true * p(x, 1, accuracy[j]) * p(y, 1, accuracy[k])
            no = (1 - prior_true) * p(x, 0, accuracy[j]) * p(y, 0, accuracy[k])
            q = yes / (yes + no)
            believed += q
            expected[j] += q if x == 1 else 1 - q
            expected[k] += q if y == 1 else 1 - q
            compared[j] += 1
            compared[k] += 1
        updated = [(expected[j] + 2) / (compared[j] + 3) for j in range(raters)]
        prior_true = (believed + 1) / (len(items) + 2)
        done = max((abs(u - a) for u, a in zip(updated, accuracy)), default=0.0) < tolerance
        accuracy = updated
        if done:
            break
    return accuracy, expected, compared


@st.composite
def _evidence(draw):
    raters = draw(st.integers(1, 4))
    totals = draw(st.lists(st.integers(0, 12), min_size=raters, max_size=raters))
    agrees = [draw(st.integers(0, n)) for n in totals]
    pairs = np.zeros((raters, raters, 2, 2))
    for j in range(raters):
        for k in range(raters):
            if j != k:
                pairs[j, k] = np.array(draw(st.lists(st.integers(0, 4), min_size=4, max_size=4))).reshape(2, 2)
    return agrees, totals, pairs


@settings(max_examples=150, deadline=None)
@given(_evidence())
def test_dawid_skene_matches_the_item_by_item_reference(evidence):
    # The same 30 EM iterations, compared iterate for iterate: run to convergence, data without
    # anchors can sit on a saddle between two labellings (rater j right and k wrong, or the reverse),
    # where rounding alone decides which one each implementation falls to.
    agree, total, pairs = evidence
    fast = one_coin_dawid_skene(agree, total, pairs, iterations=30, tolerance=0.0)
    slow = _dawid_skene_reference(agree, total, pairs.tolist(), iterations=30, tolerance=0.0)
    for got, expected in zip(fast, slow):
        np.testing.assert_allclose(got, expected, atol=1e-8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 30).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), min_size=1,
                max_size=5))
def test_without_pairs_dawid_skene_is_the_one_coin_posterior(cases):
    agree, total = [a for a, _ in cases], [n for _, n in cases]
    accuracy, expected, compared = one_coin_dawid_skene(agree, total, np.zeros((len(cases), len(cases), 2, 2)))
    np.testing.assert_allclose(accuracy, one_coin_accuracy(agree, total), atol=1e-12)
    assert expected.tolist() == agree and compared.tolist() == total


@settings(max_examples=100, deadline=None)
@given(_evidence(), st.randoms())
def test_dawid_skene_does_not_depend_on_the_raters_order_or_on_which_of_a_pair_is_first(evidence, rng):
    agree, total, pairs = evidence

    def fit(*args):  # a fixed number of iterations, as above: no saddle for rounding to decide
        return one_coin_dawid_skene(*args, iterations=30, tolerance=0.0)[0]

    order = list(range(len(agree)))
    rng.shuffle(order)
    permuted = pairs[np.ix_(order, order)]
    got = fit([agree[i] for i in order], [total[i] for i in order], permuted)
    np.testing.assert_allclose(got, fit(agree, total, pairs)[order], atol=1e-8)
    swapped = np.zeros_like(pairs)  # every item of (j first, k second) counted as (k first, j second)
    for j, k in itertools.permutations(range(len(agree)), 2):
        swapped[k, j] = pairs[j, k].T
    np.testing.assert_allclose(fit(agree, total, swapped), fit(agree, total, pairs), atol=1e-8)


def test_disagreement_with_an_anchored_rater_counts_against_the_unanchored_one():
    pairs = np.zeros((2, 2, 2, 2))
    pairs[0, 1, 1, 0] = pairs[0, 1, 0, 1] = 20  # 40 items, every one labelled apart
    accuracy, expected, compared = one_coin_dawid_skene([30, 0], [30, 0], pairs)
    assert accuracy[0] > 0.95 and accuracy[1] < 0.1  # the anchors say who is right
    assert compared.tolist() == [70, 40] and rater_reading(expected[1], compared[1], 0.7) == INVERTED
    agreeing = np.zeros((2, 2, 2, 2))
    agreeing[0, 1, 1, 1] = agreeing[0, 1, 0, 0] = 20
    assert one_coin_dawid_skene([30, 0], [30, 0], agreeing)[0][1] > 0.9  # agreeing with it: trusted


def test_pairs_of_the_wrong_shape_or_a_rater_with_itself_are_refused():
    with pytest.raises(ValueError, match="pairs must be"):
        one_coin_dawid_skene([1, 1], [1, 1], np.zeros((3, 3, 2, 2)))
    self_paired = np.zeros((2, 2, 2, 2))
    self_paired[1, 1, 0, 0] = 1
    with pytest.raises(ValueError, match="paired with itself"):
        one_coin_dawid_skene([1, 1], [1, 1], self_paired)


# --- as_labels ---------------------------------------------------------------------------------------

def test_rewards_are_read_as_labels_by_their_side_of_one_half():
    assert np.array_equal(as_labels([0.0, 1.0, 0.2, 0.8, 0.5, np.nan]), [0.0, 1.0, 0.0, 1.0, np.nan, np.nan],
                          equal_nan=True)
