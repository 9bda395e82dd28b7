"""Calibration and routing: Module 1 of the paper, run once before training.

Calibration sends the auxiliary set D_p (questions with their labels) to every expert; each answers
with its own model and returns one correctness bit per item - its row of the confidence graph. Clients
are frozen during server training, so one round suffices and per-question selection afterwards is a
local kNN lookup plus a row mean (paper Alg. 1 re-broadcasts the neighbours each iteration; with frozen
clients both give identical scores).

Routing then fixes, for every training question, its M experts in rank order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.config import COMPETENCE_SELECTIONS
from fedgrpo.core.graph import ConfidenceGraph, build_confidence_graph
from fedgrpo.core.selection import competent_counts, routing_hit_rate, select_experts
from fedgrpo.data.tasks import Question
from fedgrpo.models.embed import embed_questions
from fedgrpo.privacy.plan import PrivacyPlan
from fedgrpo.progress import ProgressSink
from fedgrpo.training.prepare import Prepared
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
    replies, failures = transport.calibrate_round(request)
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

    experts: dict[str, tuple[str, ...]]  # question_id -> its 1..M expert ids, best first
    hit_rate: float  # share of questions whose experts include one of the question's own domain
    # question_id -> every expert, the selected first, then the rest by competence: where a failed
    # expert's questions go (transport.failover).
    ranking: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # question_id -> the competence of each selected expert there, aligned with `experts` (for
    # random and all selection: zeros).
    competence: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # question_id -> the experts the routing trusts with the question, best first: the best one and
    # every other whose competence there clears the threshold (graph and oracle selection); the
    # selected ones for random and all, which have no competence. The re-check judges an expert on
    # these questions only, and a spot check goes to the next of them (transport.recheck).
    competent: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
    threshold: float = 0.0,
    debias: Callable[[np.ndarray], np.ndarray] | None = None,
    competent_substitutes: bool = False,
) -> Routing:
    """Choose M experts per question, or fewer under a competence `threshold` (`competent_counts`).
    `expert_domains` (expert id -> its main domain) is used only by the oracle method and for the
    hit-rate diagnostic. `debias` maps the graph's competences (means of released 0/1 values) to
    unbiased estimates of the true ones (per-value LDP: `PrivacyPlan.calibration_debias`); the graph keeps what was
    released."""
    ids = list(graph.expert_ids)
    # Competence ranks the selected experts and, beyond them, the failover order.
    if method == "graph":
        competence = graph.competences(embeddings, neighbours)  # (P, K)
        if debias is not None:  # a mean of debiased values is the debiased mean
            competence = np.clip(debias(competence), 0.0, 1.0)  # an estimate of a probability
    elif method == "oracle":
        competence = np.array([[expert_domains[e] == q.domain for e in ids] for q in questions], dtype=float)
    else:  # random, all: no per-question competence; failover falls back on overall competence
        competence = np.zeros((len(questions), len(ids)))
    chosen = select_experts(competence, experts_per_question, method=method, overall=graph.overall(),
                            seed=seed)  # (P, M)
    chosen_competence = np.take_along_axis(competence, chosen, axis=1)  # (P, M)
    # random and all have no per-question competence to threshold: they keep their M.
    keep = competent_counts(chosen_competence, threshold if method in COMPETENCE_SELECTIONS else 0.0)  # (P,): 1..M
    kept = [row[:n] for row, n in zip(chosen, keep)]
    # Rows padded by repeating their own experts, which changes no "is one of them right" answer.
    padded = np.stack([np.resize(row, chosen.shape[1]) for row in kept])  # (P, M)
    hit = routing_hit_rate(padded, [expert_domains[e] for e in ids], [q.domain for q in questions])
    order = select_experts(competence, len(ids), method="graph", overall=graph.overall())  # (P, K)
    # Failover order: the selected experts, then the others by competence (with
    # `competent_substitutes`, only those whose competence clears the threshold).
    bar = threshold if competent_substitutes and method in COMPETENCE_SELECTIONS else -np.inf
    ranking = {
        q.question_id: tuple(ids[i] for i in row) + tuple(ids[i] for i in full if i not in row and c[i] >= bar)
        for q, row, full, c in zip(questions, kept, order, competence)
    }
    competent = {q.question_id: tuple(ids[i] for rank, i in enumerate(full) if rank == 0 or c[i] >= threshold)
                 if method in COMPETENCE_SELECTIONS else tuple(ids[i] for i in row)
                 for q, row, full, c in zip(questions, kept, order, competence)}
    return Routing(
        experts={q.question_id: tuple(ids[i] for i in row) for q, row in zip(questions, kept)},
        hit_rate=hit, ranking=ranking,
        competence={q.question_id: tuple(float(x) for x in c[:len(row)])
                    for q, row, c in zip(questions, kept, chosen_competence)},
        competent=competent)


def mixed_probes(prepared: Prepared) -> tuple[Question, ...]:
    """The re-check's probes a run mixes into its training questions (`Splits.probe_sample` at
    probe_share), answers included: the re-check's to keep; none with the re-check off."""
    config = prepared.config
    return prepared.splits.probe_sample(config.federation.probe_share) if config.uses_recheck else ()


def training_questions(prepared: Prepared) -> tuple[Question, ...]:
    """The questions GRPO trains on, as the server's training path holds them: the pool (answers
    withheld unless ground truth is on), then the probes (`mixed_probes`), answers withheld too."""
    pool = prepared.splits.server_training_pool(prepared.config.data.use_ground_truth)
    return pool + tuple(q.without_answer() for q in mixed_probes(prepared))


@dataclass(frozen=True)
class Calibration:
    """The calibrate-and-route phase's result."""

    graph: ConfidenceGraph
    routing: Routing
    failures: dict[str, str]  # calibration failures by expert id (empty when read back on resume)

    def summary(self) -> dict[str, Any]:
        """The run report's view of the graph: competence per expert and domain, and overall."""
        return {"per_domain": self.graph.per_domain(),
                "overall": dict(zip(self.graph.expert_ids, self.graph.overall().tolist())),
                "calibration_failures": self.failures}


def calibrate_and_route(prepared: Prepared, transport: ExpertTransport, out: Path,
                        progress: ProgressSink, before_save: Callable[[], None] = lambda: None) -> Calibration:
    """Module 1 of the paper for a run: the confidence graph (``out/graph.json``, read back on
    resume rather than asking the experts again) and every training question's experts
    (``out/routing.json``), the re-check's probes among them (`training_questions`: they are
    routed as any question is). `before_save` runs once the experts have answered, before
    graph.json is written (the engine writes the calibration's traffic to disk there)."""
    config, splits = prepared.config, prepared.splits
    fed = config.federation
    graph_path = out / "graph.json"
    with progress.phase("calibrate experts on the auxiliary set", len(splits.clients)):
        if graph_path.is_file():
            graph, failures = ConfidenceGraph.load(graph_path), {}
        else:
            aux_z = embed_questions([q.question for q in splits.aux], fed.encoder, prepared.server_dir)
            graph, failures = calibrate(transport, splits.aux, aux_z)
            before_save()
            graph.save(graph_path)
    # The domain each expert declares (hello); the split's own view where an expert declares none.
    expert_domains = {s.expert_id: transport.expert_domains.get(s.expert_id) or s.main_domain
                      for s in splits.clients}
    questions = training_questions(prepared)
    pool, probes = questions[:len(splits.pool)], questions[len(splits.pool):]
    # Probes embedded apart and routed after the pool (random selection draws per row in order), so
    # the pool's embeddings and experts are exactly those of a run without probes.
    z = embed_questions([q.question for q in pool], fed.encoder, prepared.server_dir)
    if probes:
        z = np.concatenate([z, embed_questions([q.question for q in probes], fed.encoder, prepared.server_dir)])
    routing = route(list(questions), z, graph, experts_per_question=fed.experts_per_question,
                    neighbours=fed.neighbours, method=fed.selection, expert_domains=expert_domains,
                    seed=fed.selection_seed, threshold=fed.competence_threshold,
                    debias=PrivacyPlan.from_config(config).calibration_debias(),
                    competent_substitutes=config.engine.reroute_competent_only)
    (out / "routing.json").write_text(json.dumps(
        {"hit_rate": routing.hit_rate, "table": routing.table(splits.pool), "experts": routing.experts}, indent=1))
    return Calibration(graph, routing, failures)
