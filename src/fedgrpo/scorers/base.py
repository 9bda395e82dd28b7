"""The scorer protocol: a client turns a question and candidates into one raw reward per candidate.

`raw_reward` is the scorer's output in [0, 1]; None means "cannot score" and travels as NaN. A scorer
raises :class:`ScorerError` for a fault the server must record (never a silent zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fedgrpo.types import ScoreItem


class ScorerError(RuntimeError):
    """A scorer could not produce rewards for a request."""


class Scorer(Protocol):
    """A plug-in scorer (`scorers.expert.LocalExpert`'s `scorer`). It declares what it reads with
    an attribute ``reads`` (`types.Reads`): TEXTS, every candidate's full text (what a scorer gets
    that declares nothing), or ANSWERS, each question's distinct final answers (NO_ANSWER for a
    candidate without one), which is all an answer-matching scorer needs and far less to send."""

    def __call__(self, items: Sequence[ScoreItem]) -> list[list[float | None]]:
        """One list of raw rewards per item, one value per candidate (per answer)."""
        ...
