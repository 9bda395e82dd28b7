"""A transport wrapper that times every scoring round: what `metrics.json` reports as round trips."""

from __future__ import annotations

import time
from collections.abc import Mapping

from fedgrpo.transport.base import ExpertTransport, TransportWrapper
from fedgrpo.types import ScoreRequest, ScoreResults


class TimedTransport(TransportWrapper):
    """Records the wall seconds of each `score_round` (scoring included), in order."""

    def __init__(self, inner: ExpertTransport) -> None:
        super().__init__(inner)
        self.rounds: list[float] = []

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        started = time.perf_counter()
        try:
            return self.inner.score_round(step, requests)
        finally:
            self.rounds.append(time.perf_counter() - started)
