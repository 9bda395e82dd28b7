"""A transport wrapper that times every scoring round: what `metrics.json` reports as round trips."""

from __future__ import annotations

import time
from collections.abc import Mapping

from fedgrpo.transport.base import ExpertTransport
from fedgrpo.types import CalibrationReply, CalibrationRequest, ScoreRequest, ScoreResults


class TimedTransport:
    """Records the wall seconds of each `score_round` (scoring included), in order."""

    def __init__(self, inner: ExpertTransport) -> None:
        self.inner = inner
        self.expert_ids, self.expert_domains, self.ledger = inner.expert_ids, inner.expert_domains, inner.ledger
        self.expert_privacy = inner.expert_privacy
        self.rounds: list[float] = []

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        return self.inner.calibrate_round(request)

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        started = time.perf_counter()
        try:
            return self.inner.score_round(step, requests)
        finally:
            self.rounds.append(time.perf_counter() - started)

    def close(self) -> None:
        self.inner.close()
