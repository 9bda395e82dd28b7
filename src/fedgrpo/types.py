"""Frozen value types that cross the server/client boundary.

These are the *only* things a client ever receives or sends: questions and candidate texts down,
floats up. They hold no model, no data shard, no answer the client owns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# The declared range of a raw reward (a client's score of one candidate); NaN means "no reward".
REWARD_MIN, REWARD_MAX = 0.0, 1.0


def reward_in_range(value: float) -> bool:
    """A raw reward the reply contract allows: NaN (no reward) or a float in [REWARD_MIN, REWARD_MAX]."""
    return math.isnan(value) or REWARD_MIN <= value <= REWARD_MAX


@dataclass(frozen=True)
class Hello:
    """query.hello's reply: who the expert is, the domain it declares, and the privacy guarantees it
    declares (`privacy.plan`: ``records`` for a DP-trained expert, ``labels`` for label DP,
    ``values`` for per-value LDP; an empty mapping: none)."""

    expert_id: str
    domain: str
    privacy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreItem:
    """One question and the candidates one expert must score (its block of G)."""

    question_id: str
    generator: str  # which verifier compares answers; public knowledge, like the question itself
    question: str
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class ScoreRequest:
    """query.score: server -> one expert, one message per generation batch."""

    step: int
    items: tuple[ScoreItem, ...]

    @property
    def num_candidates(self) -> int:
        return sum(len(item.candidates) for item in self.items)


@dataclass(frozen=True)
class ScoreReply:
    """The reply: one float per candidate, in request order, and nothing else."""

    step: int
    rewards: tuple[float, ...]


@dataclass(frozen=True)
class CalibrationItem:
    """An auxiliary item sent for calibration: question and its public label."""

    question_id: str
    generator: str
    question: str
    answer: str


@dataclass(frozen=True)
class CalibrationRequest:
    items: tuple[CalibrationItem, ...]


@dataclass(frozen=True)
class CalibrationReply:
    """One correctness bit (0.0 or 1.0) per auxiliary item, in request order."""

    correct: tuple[float, ...]


class FailureKind(StrEnum):
    """Why a request to an expert failed, set where the failure is made: callers switch on the kind,
    never on the words of the reason (which are for people and may change)."""

    BUDGET_SPENT = "budget_spent"  # the client's privacy budget is spent: it releases nothing more
    FLAGGED = "flagged"  # the re-check judged the expert dishonest and excludes its replies
    TIMED_OUT = "timed_out"  # no reply by the deadline
    REFUSED = "refused"  # a reply that breaks the reply contract (`transport.contract`)
    STALE = "stale"  # a reply for another step
    ERROR = "error"  # anything else: the expert raised, its node or its service failed


@dataclass(frozen=True)
class ExpertFailure:
    """One failed request: the expert, the step, a one-line reason for people and its kind for code."""

    expert_id: str
    step: int
    reason: str
    kind: FailureKind


@dataclass(frozen=True)
class ScoreResults:
    """Replies that arrived (by expert id) and the failures, which the caller records, never hides."""

    replies: dict[str, ScoreReply] = field(default_factory=dict)
    failures: tuple[ExpertFailure, ...] = ()
