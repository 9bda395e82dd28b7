"""Calibration and routing: Module 1 of the paper, run once before training.

Calibration sends the auxiliary set D_p (questions with their labels) to every expert; each answers
with its own model and returns one correctness bit per item - its row of the confidence graph. Clients
are frozen during server training, so one round suffices and per-question selection afterwards is a
local kNN lookup plus a row mean (paper Alg. 1 re-broadcasts the neighbours each iteration; with frozen
clients both give identical scores).

Routing then fixes, for every training question, its M experts in rank order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedgrpo.core.graph import ConfidenceGraph, build_confidence_graph
from fedgrpo.core.selection import routing_hit_rate, select_experts
from fedgrpo.data.tasks import Question
from fedgrpo.transport.base import ExpertTransport
from fedgrpo.types import CalibrationItem, CalibrationRequest


def calibrate(
    transport: ExpertTransport, aux: Sequence[Question], aux_embeddings: np.ndarray
) -> tuple[ConfidenceGraph, dict[str, str]]:
    """Build the confidence graph; returns it and the calibration failures by expert.

    An expert whose calibration failed gets an all-zero row: it is selected only when nothing better
    exists, and the failure is reported.
    """
    request = CalibrationRequest(tuple(
        CalibrationItem(q.question_id, q.generator, q.question, q.answer or "") for q in aux
    ))
    replies, failures = transport.calibrate(request)
    correctness = np.zeros((len(transport.expert_ids), len(aux)))  # (K, N)
    for row, expert_id in enumerate(transport.expert_ids):
        if expert_id in replies:
            correctness[row] = replies[expert_id].correct
    graph = build_confidence_graph(
        transport.expert_ids, tuple(q.question_id for q in aux), tuple(q.domain for q in aux),
        aux_embeddings, correctness,
    )
    return graph, failures


@dataclass(frozen=True)
class Routing:
    """The selected experts of every training question, best first."""

    experts: dict[str, tuple[str, ...]]  # question_id -> M expert ids
    hit_rate: float  # share of questions whose experts include one of the question's own domain
    # question_id -> every expert, the M selected first, then the rest by competence: where a failed
    # expert's questions go (transport.failover).
    ranking: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def table(self, questions: Sequence[Question]) -> dict[str, dict[str, int]]:
        """domain -> expert id -> how often it is selected for that domain's questions."""
        out: dict[str, dict[str, int]] = {}
        for q in questions:
            for expert_id in self.experts[q.question_id]:
                by = out.setdefault(q.domain, {})
                by[expert_id] = by.get(expert_id, 0) + 1
        return out


def route(
    questions: Sequence[Question],
    embeddings: np.ndarray,
    graph: ConfidenceGraph,
    *,
    experts_per_question: int,
    neighbours: int,
    method: str,
    expert_domains: dict[str, str],
    seed: int = 0,
) -> Routing:
    """Choose M experts per question. `expert_domains` (expert id -> its main domain) is used only by
    the oracle method and for the hit-rate diagnostic."""
    ids = list(graph.expert_ids)
    # Competence that ranks the experts beyond the selected ones (the failover order).
    competence = np.zeros((len(questions), len(ids)))
    if method == "graph":
        competence = graph.competences(embeddings, neighbours)  # (P, K)
        chosen = select_experts(competence, experts_per_question, overall=graph.overall(), method="top")
    elif method == "oracle":
        competence = np.array([[expert_domains[e] == q.domain for e in ids] for q in questions], dtype=float)
        chosen = select_experts(competence, experts_per_question, overall=graph.overall(), method="top")
    elif method == "random":
        chosen = select_experts(np.zeros((len(questions), len(ids))), experts_per_question,
                                method="random", seed=seed)
    else:  # all
        chosen = select_experts(np.zeros((len(questions), len(ids))), len(ids), method="all")
    hit = routing_hit_rate(chosen, [expert_domains[e] for e in ids], [q.domain for q in questions])
    order = select_experts(competence, len(ids), overall=graph.overall(), method="top")  # (P, K)
    ranking = {
        q.question_id: tuple(ids[i] for i in row) + tuple(ids[i] for i in full if i not in row)
        for q, row, full in zip(questions, chosen, order)
    }
    return Routing({q.question_id: tuple(ids[i] for i in row) for q, row in zip(questions, chosen)}, hit,
                   ranking)
