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
    def __call__(self, items: Sequence[ScoreItem]) -> list[list[float | None]]:
        """One list of raw rewards per item, one value per candidate."""
        ...
