"""Expert selection (top-m with deterministic ties, seeded random, all) and the routing hit rate.

Notation as in fedgrpo.core.selection: P questions, K experts, m experts kept per question.

Run: .venv/bin/python -m pytest tests/unit/test_selection.py
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from fedgrpo.core import selection
from fedgrpo.core.graph import build_confidence_graph
from fedgrpo.core.selection import competent_counts, routing_hit_rate, select_experts
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError
from fedgrpo.training.calibrate import route


def _top_reference(competence: np.ndarray, m: int, overall: np.ndarray) -> np.ndarray:
    """Slow top-m: sort each row's experts by (-competence, -overall, index) in plain Python."""
    rows = []
    for row in competence.tolist():
        ranked = sorted(range(len(row)), key=lambda k: (-row[k], -overall[k], k))
        rows.append(ranked[:m])
    return np.array(rows)


def test_top_keeps_the_most_competent_best_first():
    # Eq. 6: Top-m by competence, not a threshold; best first so the caller can read the order.
    competence = np.array([[0.1, 0.8, 0.3, 0.9], [0.7, 0.0, 0.6, 0.2]])
    np.testing.assert_array_equal(select_experts(competence, 2), [[3, 1], [0, 2]])


def test_top_breaks_ties_by_overall_competence():
    # Experts 0 and 2 tie on the question; expert 2 is better on the whole auxiliary set.
    competence = np.array([[0.5, 0.1, 0.5]])
    got = select_experts(competence, 1, overall=np.array([0.2, 0.9, 0.7]))
    np.testing.assert_array_equal(got, [[2]])


def test_top_breaks_remaining_ties_by_lower_index():
    # Equal on the question and overall: the lower expert index wins, so runs are reproducible.
    competence = np.array([[0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(select_experts(competence, 2, overall=np.ones(3)), [[0, 1]])
    np.testing.assert_array_equal(select_experts(competence, 3), [[0, 1, 2]])


def test_top_matches_slow_reference_on_random_ties():
    # Competences on a coarse grid (means of L = 4 bits) tie often, which exercises both tie-breaks.
    rng = np.random.default_rng(0)
    for _ in range(50):
        P, K = (int(n) for n in rng.integers(1, 7, size=2))
        m = int(rng.integers(1, K + 1))
        competence = rng.integers(0, 5, size=(P, K)) / 4
        overall = rng.integers(0, 3, size=K) / 2
        expected = _top_reference(competence, m, overall)
        np.testing.assert_array_equal(select_experts(competence, m, overall=overall), expected)


def test_top_ignores_the_seed():
    # Top-m uses no RNG: the seed argument exists for "random" only.
    competence = np.random.default_rng(1).random((5, 4))
    np.testing.assert_array_equal(select_experts(competence, 2, seed=0),
                                  select_experts(competence, 2, seed=99))


def test_random_is_repeatable_with_a_seed():
    # The random baseline must replay exactly under the same seed and differ under another.
    competence = np.zeros((50, 6))
    first = select_experts(competence, 2, method="random", seed=3)
    np.testing.assert_array_equal(first, select_experts(competence, 2, method="random", seed=3))
    assert not np.array_equal(first, select_experts(competence, 2, method="random", seed=4))


def test_random_draws_distinct_experts_in_range():
    # Like random.sample in the official code: m different experts per question.
    got = select_experts(np.zeros((200, 5)), 3, method="random", seed=0)
    assert got.shape == (200, 3)
    assert got.min() >= 0 and got.max() < 5
    assert all(len(set(row)) == 3 for row in got.tolist())


def test_random_is_roughly_uniform():
    # Each of K = 5 experts should be picked in about m/K = 40% of 4000 questions.
    got = select_experts(np.zeros((4000, 5)), 2, method="random", seed=0)
    share = np.bincount(got.ravel(), minlength=5) / 4000
    np.testing.assert_allclose(share, 0.4, atol=0.03)


def test_random_ignores_competence():
    # The baseline has no calibration, so competence values must not change the draw.
    low = select_experts(np.zeros((10, 4)), 2, method="random", seed=5)
    high = select_experts(np.random.default_rng(0).random((10, 4)), 2, method="random", seed=5)
    np.testing.assert_array_equal(low, high)


def test_all_returns_every_expert():
    np.testing.assert_array_equal(select_experts(np.zeros((2, 3)), 3, method="all"),
                                  [[0, 1, 2], [0, 1, 2]])


def test_all_needs_m_equal_to_k():
    with pytest.raises(ConfigError, match="must equal K=3"):
        select_experts(np.zeros((2, 3)), 2, method="all")


@pytest.mark.parametrize("m", [0, 4, -1, True, 1.5])
def test_m_outside_one_to_k_names_the_fix(m):
    with pytest.raises(ConfigError, match="experts_per_question"):
        select_experts(np.zeros((2, 3)), m)


def test_unknown_method_names_the_options():
    with pytest.raises(ConfigError, match="graph, random, oracle, all"):
        select_experts(np.zeros((2, 3)), 1, method="best")  # type: ignore[arg-type]


def test_competence_must_be_two_dimensional():
    with pytest.raises(ConfigError, match=r"\(P, K\)"):
        select_experts(np.zeros(3), 1)


def test_nan_competence_is_rejected_for_top():
    # NaN would sort arbitrarily; it means calibration is missing, which the caller must fix.
    with pytest.raises(ConfigError, match="finite"):
        select_experts(np.array([[np.nan, 0.5]]), 1)


def test_overall_must_have_one_value_per_expert():
    with pytest.raises(ConfigError, match="overall"):
        select_experts(np.zeros((1, 3)), 1, overall=np.zeros(2))


def test_routing_hit_rate_counts_questions_with_a_matching_expert():
    # Question 0 (algebra) got the algebra expert; question 1 (geometry) did not.
    selected = np.array([[0, 2], [0, 2]])
    rate = routing_hit_rate(selected, ["algebra", "geometry", "counting"], ["algebra", "geometry"])
    assert rate == 0.5


def test_routing_hit_rate_needs_one_domain_per_question():
    with pytest.raises(ConfigError, match="one question domain per selected row"):
        routing_hit_rate(np.array([[0]]), ["a"], ["a", "b"])


def test_routing_hit_rate_rejects_unknown_expert_index():
    with pytest.raises(ConfigError, match="outside"):
        routing_hit_rate(np.array([[3]]), ["a", "b"], ["a"])


def test_docstring_example_runs():
    result = doctest.testmod(selection)
    assert result.attempted > 0 and result.failed == 0


# --- the competence threshold (adaptive M) -----------------------------------------------------------


def test_a_threshold_keeps_the_competent_prefix_and_always_the_best():
    chosen_competence = np.array([[0.9, 0.1],   # one expert knows the domain
                                  [0.2, 0.0],   # none clears it: the best is kept anyway
                                  [0.8, 0.6],   # both do
                                  [0.5, 0.5]])  # a threshold is inclusive
    np.testing.assert_array_equal(competent_counts(chosen_competence, 0.5), [1, 1, 2, 2])
    np.testing.assert_array_equal(competent_counts(chosen_competence, 0.0), [2, 2, 2, 2])  # the paper's M


def test_the_kept_experts_are_a_prefix_even_when_a_later_one_clears_the_threshold():
    # Rows are best first; an unsorted row keeps its prefix only (the caller's order is trusted).
    np.testing.assert_array_equal(competent_counts(np.array([[0.9, 0.1, 0.8]]), 0.5), [1])


def test_a_threshold_outside_zero_one_is_refused():
    with pytest.raises(ConfigError, match="competence_threshold"):
        competent_counts(np.zeros((1, 2)), 1.5)


def _graph_two_domains():
    """Two auxiliary items (domains a, b) and two experts, each right on its own domain only."""
    return build_confidence_graph(("ea", "eb"), ("x", "y"), ("a", "b"), np.eye(2), np.eye(2))


def test_route_with_a_threshold_sends_each_question_to_its_competent_expert_only():
    questions = [Question("qa", "a", "g", "a question", None), Question("qb", "b", "g", "b question", None)]
    graph = _graph_two_domains()
    common = dict(experts_per_question=2, neighbours=1, method="graph", expert_domains={"ea": "a", "eb": "b"})
    paper = route(questions, np.eye(2), graph, **common)
    assert paper.experts == {"qa": ("ea", "eb"), "qb": ("eb", "ea")}  # fixed top-M: the other one too
    adaptive = route(questions, np.eye(2), graph, threshold=0.5, **common)
    assert adaptive.experts == {"qa": ("ea",), "qb": ("eb",)}
    assert adaptive.competence == {"qa": (1.0,), "qb": (1.0,)}
    assert adaptive.ranking["qa"] == ("ea", "eb")  # the failover order still names every expert
    assert adaptive.hit_rate == paper.hit_rate == 1.0
    # Competent substitutes only: eb knows nothing of a, so qa has no substitute (no reward if ea is lost).
    strict = route(questions, np.eye(2), graph, threshold=0.5, competent_substitutes=True, **common)
    assert strict.experts == adaptive.experts and strict.ranking == {"qa": ("ea",), "qb": ("eb",)}
    # Whom the re-check judges on a question (and who may spot-check): the competent ones, the best always.
    assert adaptive.competent == {"qa": ("ea",), "qb": ("eb",)}
    assert paper.competent == {"qa": ("ea", "eb"), "qb": ("eb", "ea")}  # threshold 0: everyone is competent
    nobody = route(questions, np.zeros((2, 2)) + 0.1, _graph_nobody_knows(), threshold=0.5, **common)
    assert all(len(c) == 1 for c in nobody.competent.values())  # the best is judged even below the threshold


def _graph_nobody_knows():
    return build_confidence_graph(("ea", "eb"), ("x", "y"), ("a", "b"), np.eye(2), np.zeros((2, 2)))


@pytest.mark.parametrize("method", ["random", "all"])
def test_route_without_a_competence_per_question_keeps_m_under_a_threshold(method):
    # random and all have no competence per question (all zeros): a threshold would cut every question
    # to one arbitrary expert, so they keep their M (the default threshold must not break the baseline).
    questions = [Question("qa", "a", "g", "a question", None), Question("qb", "b", "g", "b question", None)]
    routing = route(questions, np.eye(2), _graph_two_domains(), experts_per_question=2, neighbours=1,
                    method=method, expert_domains={"ea": "a", "eb": "b"}, threshold=0.5)
    assert all(len(experts) == 2 for experts in routing.experts.values())
    assert routing.competent == routing.experts  # no competence: the selected ones are the trusted ones
