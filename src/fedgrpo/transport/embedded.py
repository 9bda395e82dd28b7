"""The default engine: experts are in-process `Expert`s called through a thread pool.

Requests and replies are the same value types the Flower engine will carry, and every message passes
through the same ledger, so bytes are comparable across engines. Each request has a timeout; an expert
that raises, times out, or replies with the wrong shape is reported in `.failures`, never zero-filled.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Mapping

from fedgrpo.transport.base import (
    Expert,
    TrafficLedger,
    accept_calibration,
    accept_score,
    failure_kind,
)
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    ExpertFailure,
    ScoreReply,
    ScoreRequest,
    ScoreResults,
)


class EmbeddedTransport:
    def __init__(self, experts: Mapping[str, Expert], *, timeout_s: float = 600.0,
                 max_workers: int | None = None) -> None:
        """`experts`: expert id -> the expert; each declares its domain through `hello`, as it
        would to the Flower engine."""
        self._experts = dict(experts)
        self.experts = self._experts  # read-only use: the run report reads the clients' own logs
        self.expert_ids = tuple(self._experts)
        hellos = {expert_id: expert.hello() for expert_id, expert in self._experts.items()}
        self.expert_domains = {expert_id: hello.domain for expert_id, hello in hellos.items()}
        self.expert_privacy = {expert_id: hello.privacy for expert_id, hello in hellos.items()}
        self.timeout_s = timeout_s
        self.ledger = TrafficLedger()
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers or len(self._experts) or 1,
                                           thread_name_prefix="expert")

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        futures = {}
        for expert_id, expert in self._experts.items():
            self.ledger.record("calibrate", -1, expert_id, "down", request)
            futures[expert_id] = self._pool.submit(expert.calibrate, request)
        replies, failures = {}, {}
        for expert_id, future in futures.items():
            try:
                reply = future.result(timeout=self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any expert fault is recorded, not raised
                failures[expert_id] = _reason(exc)
                continue
            refused = accept_calibration(self.ledger, expert_id, request, reply)
            if refused:
                failures[expert_id] = refused
            else:
                replies[expert_id] = reply
        return replies, failures

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        futures = {}
        for expert_id, request in requests.items():
            self.ledger.record("score", step, expert_id, "down", request)
            futures[expert_id] = self._pool.submit(self._experts[expert_id].score, request)
        replies: dict[str, ScoreReply] = {}
        failures: list[ExpertFailure] = []
        for expert_id, future in futures.items():
            try:
                reply = future.result(timeout=self.timeout_s)
            except Exception as exc:  # noqa: BLE001
                failures.append(ExpertFailure(expert_id, step, _reason(exc), failure_kind(exc)))
                continue
            kept = accept_score(self.ledger, step, expert_id, requests[expert_id], reply)
            if isinstance(kept, ExpertFailure):
                failures.append(kept)
            else:
                replies[expert_id] = kept
        return ScoreResults(replies=replies, failures=tuple(failures))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, cf.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
