"""The federated reward hook TRL calls: TRL's columns -> routing -> transport -> rewards in TRL's order.

TRL generates `num_generations = M*G` candidates per question and hands each question's candidates
over consecutively. Candidates [m*G, (m+1)*G) go to the question's m-th selected expert, so TRL's group
normalisation spans the whole federated group - exactly `core.advantage.federated_advantages` with
joint pooling (tested as an invariant).

The reward returned per candidate is accuracy_weight * expert reward + format_weight * format reward.
It is one reward function on purpose: a missing expert reply must make the *whole* reward NaN (advantage
0, baseline untouched); with two TRL reward functions, TRL's NaN-skipping sum would keep the format part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedgrpo.data.prompts import is_well_formed
from fedgrpo.data.tasks import Question
from fedgrpo.transport.base import ExpertTransport
from fedgrpo.types import ExpertFailure, ScoreItem, ScoreRequest


@dataclass
class RewardLog:
    """What the hook saw, per call: for the reward curve and the failure report."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    failures: list[ExpertFailure] = field(default_factory=list)


class FederatedReward:
    """Callable passed to TRL's `reward_funcs`."""

    __name__ = "federated_reward"  # TRL names logged metrics after the function

    def __init__(
        self,
        questions: Mapping[str, Question],
        routing: Mapping[str, Sequence[str]] | None,
        transport: ExpertTransport | None,
        *,
        group_size: int,
        generations_per_expert: int,
        accuracy_weight: float,
        format_weight: float,
        group_by_question: Callable[[Sequence[str], int], list[tuple[str, slice]]],
        gold_scorer: Callable[[Question, str], float] | None = None,
    ) -> None:
        """`gold_scorer` replaces the experts with a local verifier on gold answers (ground-truth mode)."""
        if gold_scorer is None and (routing is None or transport is None):
            raise ValueError("expert rewards need a routing and a transport")
        self.questions = questions
        self.routing = routing
        self.transport = transport
        self.group_size = group_size  # TRL's num_generations: M*G in both modes (equal compute)
        self.g = generations_per_expert
        self.accuracy_weight = accuracy_weight
        self.format_weight = format_weight
        self.group_by_question = group_by_question
        self.gold_scorer = gold_scorer
        self.log = RewardLog()
        self.calls = 0

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], question_id: Sequence[str],
                 trainer_state: Any = None, **_: Any) -> list[float | None]:
        step = int(getattr(trainer_state, "global_step", self.calls))
        self.calls += 1
        groups = self.group_by_question(list(question_id), self.group_size)
        accuracy = np.full(len(completions), np.nan)  # one raw reward per candidate, TRL order
        if self.gold_scorer is not None:
            for qid, span in groups:
                q = self.questions[qid]
                accuracy[span] = [self.gold_scorer(q, c) for c in completions[span]]
        else:
            accuracy = self._expert_rewards(step, groups, completions)
        fmt = np.array([1.0 if is_well_formed(c) else 0.0 for c in completions])
        total = self.accuracy_weight * accuracy + self.format_weight * fmt  # NaN stays NaN
        self.log.steps.append({
            "step": step,
            "accuracy_reward": _nanmean(accuracy),
            "format_reward": float(fmt.mean()) if len(fmt) else math.nan,
            "reward": _nanmean(total),
            "missing": int(np.isnan(accuracy).sum()),
        })
        return [None if math.isnan(r) else float(r) for r in total]

    def _expert_rewards(self, step: int, groups: list[tuple[str, slice]],
                        completions: Sequence[str]) -> np.ndarray:
        assert self.routing is not None and self.transport is not None
        items: dict[str, list[ScoreItem]] = {}
        spans: dict[str, list[slice]] = {}
        for qid, span in groups:
            q = self.questions[qid]
            for m, expert_id in enumerate(self.routing[qid]):
                block = slice(span.start + m * self.g, span.start + (m + 1) * self.g)
                items.setdefault(expert_id, []).append(
                    ScoreItem(qid, q.generator, q.question, tuple(completions[block])))
                spans.setdefault(expert_id, []).append(block)
        requests = {e: ScoreRequest(step, tuple(its)) for e, its in items.items()}
        results = self.transport.score(step, requests)
        self.log.failures.extend(results.failures)
        rewards = np.full(len(completions), np.nan)
        for expert_id, reply in results.replies.items():
            flat = np.asarray(reply.rewards, dtype=float)
            offset = 0
            for block in spans[expert_id]:
                rewards[block] = flat[offset:offset + self.g]
                offset += self.g
        if results.failures and not results.replies:
            raise RuntimeError(
                f"every expert failed at step {step}: "
                + "; ".join(f"{f.expert_id}: {f.reason}" for f in results.failures)
            )
        return rewards


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
