"""The confidence graph: normalisation, kNN neighbours, competences, summaries and JSON round trip.

Notation as in fedgrpo.core.graph: K experts, N auxiliary items, d embedding width, P queries,
L neighbours.

Run: .venv/bin/python -m pytest tests/unit/test_graph.py
"""

from __future__ import annotations

import dataclasses
import doctest
import json

import numpy as np
import pytest

from fedgrpo.core import graph as graph_module
from fedgrpo.core.graph import ConfidenceGraph, build_confidence_graph
from fedgrpo.errors import ConfigError, FedGRPOError


def _graph(embeddings=None, correctness=None) -> ConfidenceGraph:
    """Three auxiliary items (two 'add', one 'mul'), two experts; a1 and a2 point the same way."""
    return build_confidence_graph(
        expert_ids=["adder", "multiplier"],
        aux_ids=["a0", "a1", "a2"],
        aux_domains=["add", "mul", "add"],
        aux_embeddings=np.array([[0.0, 2.0], [3.0, 0.0], [1.0, 0.0]]) if embeddings is None
        else embeddings,
        correctness=np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) if correctness is None
        else correctness,
    )


def _random_graph(rng: np.random.Generator, K: int, N: int, raw: np.ndarray) -> ConfidenceGraph:
    """K experts with random correctness bits on N items whose (unnormalised) embeddings are raw."""
    return build_confidence_graph(
        expert_ids=[f"client-{k}" for k in range(K)],
        aux_ids=[f"aux-{n}" for n in range(N)],
        aux_domains=[f"domain-{n % 3}" for n in range(N)],
        aux_embeddings=raw,
        correctness=(rng.random((K, N)) < 0.5).astype(float),
    )


def test_embeddings_are_l2_normalised_on_construction():
    # Alg. 1, line 1: auxiliary embeddings are normalised once, so dot products are cosines.
    g = _graph()
    np.testing.assert_allclose(np.linalg.norm(g.aux_embeddings, axis=1), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(g.aux_embeddings, [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])


def test_construction_copies_the_callers_array():
    # Normalising must not rescale an array the caller still owns.
    embeddings = np.array([[0.0, 2.0], [3.0, 0.0], [1.0, 0.0]])
    _graph(embeddings=embeddings)
    assert embeddings[1, 0] == 3.0


def test_graph_is_frozen_and_its_arrays_read_only():
    # Calibration results are constants during training; accidental writes must fail loudly.
    g = _graph()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.expert_ids = ("x",)  # type: ignore[misc]
    with pytest.raises(ValueError):
        g.correctness[0, 0] = 0.0


def test_neighbours_are_most_similar_first():
    # Query along the x axis: a1 and a2 (x axis) before a0 (y axis); a1/a2 tie exactly.
    g = _graph()
    np.testing.assert_array_equal(g.neighbours(np.array([[5.0, 0.0]]), 3), [[1, 2, 0]])


def test_neighbour_ties_go_to_the_lower_index():
    # (1, 1) is equally close to all three items; a stable sort keeps auxiliary order.
    g = _graph()
    np.testing.assert_array_equal(g.neighbours(np.array([[1.0, 1.0]]), 3), [[0, 1, 2]])


def test_neighbours_clamp_l_to_the_auxiliary_set():
    # L > |D_p| keeps every item rather than failing (a documented choice; the paper is silent).
    assert _graph().neighbours(np.ones((2, 2)), 20).shape == (2, 3)


def test_competences_equal_hand_computed_knn_mean():
    # Eq. 5-6: r_k(x) = (1/L) sum over the L neighbours of 1[expert k right on that item].
    g = _graph()
    z = np.array([[0.0, 1.0], [1.0, 0.1]])  # neighbours: [a0, a1] and [a1, a2]
    np.testing.assert_array_equal(g.neighbours(z, 2), [[0, 1], [1, 2]])
    # adder: (1 + 0)/2, (0 + 1)/2; multiplier: (0 + 1)/2, (1 + 1)/2
    np.testing.assert_array_equal(g.competences(z, 2), [[0.5, 0.5], [0.5, 1.0]])


def test_competences_match_slow_loop_reference():
    # Vectorised matmul + argsort + fancy indexing against explicit per-pair cosines and sorting.
    rng = np.random.default_rng(0)
    for _ in range(20):
        K, N, d, P = (int(n) for n in rng.integers(1, 8, size=4))
        L = int(rng.integers(1, N + 2))  # sometimes above N, to exercise the clamp
        raw = rng.normal(size=(N, d))  # the reference normalises these itself
        g = _random_graph(rng, K, N, raw)
        z = rng.normal(size=(P, d))
        for p in range(P):
            cos = [float(np.dot(z[p], raw[n]) / (np.linalg.norm(z[p]) * np.linalg.norm(raw[n])))
                   for n in range(N)]
            near = sorted(range(N), key=lambda n: (-cos[n], n))[:L]
            np.testing.assert_array_equal(g.neighbours(z[p : p + 1], L)[0], near)
            expected = [sum(g.correctness[k, n] for n in near) / len(near) for k in range(K)]
            np.testing.assert_allclose(g.competences(z[p : p + 1], L)[0], expected, rtol=1e-15)


def test_overall_is_mean_correctness_over_all_items():
    np.testing.assert_allclose(_graph().overall(), [2 / 3, 2 / 3])


def test_per_domain_competence():
    # adder: right on both 'add' items, wrong on 'mul'; multiplier: one of two 'add', the 'mul' one.
    assert _graph().per_domain() == {
        "adder": {"add": 1.0, "mul": 0.0},
        "multiplier": {"add": 0.5, "mul": 1.0},
    }


def test_json_is_readable_lists():
    # Plain lists (not base64) so a person can inspect a calibration file.
    payload = json.loads(_graph().to_json())
    assert payload["format"] == "fedgrpo.confidence_graph"
    assert payload["correctness"] == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    assert payload["aux_embeddings"][0] == [0.0, 1.0]


def test_json_round_trip_is_exact():
    # Normalised rows are kept bit for bit on reload, so a loaded graph selects exactly as before.
    rng = np.random.default_rng(1)
    g = _random_graph(rng, K=4, N=9, raw=rng.normal(size=(9, 5)))
    back = ConfidenceGraph.from_json(g.to_json())
    assert back.aux_embeddings.tobytes() == g.aux_embeddings.tobytes()
    assert back.correctness.tobytes() == g.correctness.tobytes()
    assert (back.expert_ids, back.aux_ids, back.aux_domains) == (g.expert_ids, g.aux_ids,
                                                                 g.aux_domains)
    assert back.to_json() == g.to_json()


def test_save_and_load(tmp_path):
    g = _graph()
    path = tmp_path / "graph.json"
    g.save(path)
    assert ConfidenceGraph.load(path).to_json() == g.to_json()
    assert not (tmp_path / "graph.json.tmp").exists()  # the temporary file was renamed


def test_load_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(FedGRPOError, match="no confidence graph"):
        ConfidenceGraph.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "text, message",
    [("not json", "not valid JSON"), ("{}", "not a confidence graph"),
     ('{"format": "fedgrpo.confidence_graph", "version": 99}', "version 99"),
     ('{"format": "fedgrpo.confidence_graph", "version": 1}', "lacks expert_ids")],
)
def test_from_json_explains_bad_input(text, message):
    with pytest.raises(FedGRPOError, match=message):
        ConfidenceGraph.from_json(text)


def test_correctness_shape_must_be_experts_by_items():
    with pytest.raises(ConfigError, match=r"correctness must have shape \(K=2, N=3\)"):
        _graph(correctness=np.ones((3, 2)))


def test_correctness_must_be_binary():
    # The paper's competence is a mean of correctness bits; graded scores must be binarised first.
    with pytest.raises(ConfigError, match="0.0 and 1.0"):
        _graph(correctness=np.full((2, 3), 0.5))


def test_embeddings_need_one_row_per_item():
    with pytest.raises(ConfigError, match="aux_embeddings must have shape"):
        _graph(embeddings=np.ones((2, 2)))


def test_zero_embedding_is_rejected():
    # A zero vector has no direction, so its cosine similarity is undefined.
    with pytest.raises(ConfigError, match="all-zero row"):
        _graph(embeddings=np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))


def test_ids_must_be_unique():
    with pytest.raises(ConfigError, match="duplicates"):
        build_confidence_graph(["a", "a"], ["x"], ["d"], np.ones((1, 2)), np.ones((2, 1)))


def test_domains_need_one_per_item():
    with pytest.raises(ConfigError, match="aux_domains"):
        build_confidence_graph(["a"], ["x", "y"], ["d"], np.ones((2, 2)), np.ones((1, 2)))


def test_ids_must_not_be_a_single_string():
    # tuple("abc") would silently make three experts "a", "b", "c".
    with pytest.raises(ConfigError, match="not one string"):
        ConfidenceGraph("abc", ("x",), ("d",), np.ones((1, 2)), np.ones((3, 1)))  # type: ignore


def test_query_width_must_match():
    with pytest.raises(ConfigError, match=r"\(P, d=2\)"):
        _graph().neighbours(np.ones((1, 3)), 1)


def test_neighbour_count_must_be_positive():
    with pytest.raises(ConfigError, match="neighbours"):
        _graph().neighbours(np.ones((1, 2)), 0)


def test_docstring_example_runs():
    result = doctest.testmod(graph_module)
    assert result.attempted > 0 and result.failed == 0
