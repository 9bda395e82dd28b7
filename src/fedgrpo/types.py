"""Frozen value types that cross the server/client boundary.

These are the *only* things a client ever receives or sends: questions and what its scorer reads of
the candidates down, packed rewards up. They hold no model, no data shard, no answer the client owns.

Two levels (`transport.session` turns one into the other, on each side):

- *Resolved* messages, what the server's reward hook asks and what a client's scorer reads:
  `ScoreRequest` of `ScoreItem`s (the question's id, verifier and text, and its candidates: full
  texts, or the distinct final answers when the scorer reads only those, `Reads`) and `ScoreReply`
  (one float per candidate or answer).
- *Wire* messages, what travels between server and client: `WireScoreRequest` of `WireItem`s (a
  question named by its number in the server's session, its text only the first time) and
  `WireScoreReply` / `WireCalibrationReply` (rewards packed at their information content,
  `PackedRewards`: bits, or 8-bit levels, and a mask of missing values).
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


class Reads(StrEnum):
    """What a scorer reads of the candidates, so what the server sends it (declared in its hello)."""

    ANSWERS = "answers"  # the candidates' final answers only, each distinct one once (answer matching)
    TEXTS = "texts"  # every candidate's full text (a scorer that reads the reasoning)


# A candidate without a final answer, among the distinct answers of a request in ANSWERS form. No
# extractor returns an empty answer (`data.prompts`: an empty answer is None), so it names nothing else.
NO_ANSWER = ""


@dataclass(frozen=True)
class Hello:
    """query.hello's reply: who the expert is, the domain it declares, the privacy guarantees it
    declares (`privacy.plan`: ``records`` for a DP-trained expert, ``labels`` for label DP,
    ``values`` for per-value LDP; an empty mapping: none), and what its scorer reads (`Reads`; an
    expert that declares nothing gets full texts)."""

    expert_id: str
    domain: str
    privacy: dict[str, Any] = field(default_factory=dict)
    reads: Reads = Reads.TEXTS


@dataclass(frozen=True)
class ScoreItem:
    """One question and the candidates one expert must score (its block of G): full texts, or, in a
    request of ANSWERS form, the block's distinct final answers (NO_ANSWER for candidates without one)."""

    question_id: str
    generator: str  # which verifier compares answers; public knowledge, like the question itself
    question: str
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class ScoreRequest:
    """query.score, resolved: what one expert is asked in one generation batch. `reads` says what
    the items' candidates hold (the server's reward hook always asks with full texts; the transport
    sends each expert the form it reads)."""

    step: int
    items: tuple[ScoreItem, ...]
    reads: Reads = Reads.TEXTS

    @property
    def num_candidates(self) -> int:
        return sum(len(item.candidates) for item in self.items)


@dataclass(frozen=True)
class ScoreReply:
    """The reply, resolved: one float per candidate (per distinct answer in ANSWERS form), in request
    order, and nothing else; NaN = no reward."""

    step: int
    rewards: tuple[float, ...]


# --- on the wire ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionText:
    """What a client keeps of a question, sent once per session: its id, verifier and text."""

    question_id: str
    generator: str
    question: str


@dataclass(frozen=True)
class WireItem:
    """One question of a wire request: its number in the server's session (`ref`), its text when the
    client may not have it yet (else None: the client keeps it from an earlier request of the same
    session), and its candidates in the request's form."""

    ref: int
    text: QuestionText | None
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class WireScoreRequest:
    """query.score as it travels. `session` names the server's numbering of questions (a new one
    per transport, so a number never means two questions to a client); `reads` what the
    candidates hold."""

    step: int
    session: str
    reads: Reads
    items: tuple[WireItem, ...]

    @property
    def num_values(self) -> int:
        """How many rewards the reply holds: one per candidate (per distinct answer)."""
        return sum(len(item.candidates) for item in self.items)


class RewardForm(StrEnum):
    """How a reply's values are packed (`core.packing`)."""

    BITS = "bits"  # one bit per value: every present value is 0.0 or 1.0 (exact)
    Q8 = "q8"  # one byte per value: round(255 v), an error of at most 1/510


@dataclass(frozen=True)
class PackedRewards:
    """Values in [0, 1] or missing, at their information content: `values` in `form`, and `mask`
    one bit per value set where it is missing (empty when none is). Made by `core.packing`."""

    form: RewardForm
    values: bytes
    mask: bytes = b""


@dataclass(frozen=True)
class WireScoreReply:
    """The reply as it travels: the step it answers and one packed reward per value of the request."""

    step: int
    rewards: PackedRewards


@dataclass(frozen=True)
class WireCalibrationReply:
    """The calibration reply as it travels: one bit per auxiliary item (form BITS, no mask)."""

    correct: PackedRewards


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
    NEEDS_TEXT = "needs_text"  # the client lacks a question's text (it restarted): the server resends it
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
