"""The default engine: in-process experts called through a thread pool.

Each client's expert sits behind its own `ClientEndpoint` (`transport.session`), so the embedded
engine exchanges the very messages the Flower engine and a site's expert service carry (what each
scorer reads, each question's text once, packed rewards) and every message passes through the same
ledger: payload bytes compare across engines. Nothing is serialized in this process; a message's
wire bytes are what it would weigh as the expert service's JSON body (`transport.json_body`), the
engine's nearest real wire. Each request has a timeout; an expert that raises, times out, or replies
with the wrong shape is reported in `.failures`, never zero-filled.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgrpo.data.prompts import PromptStyle
from fedgrpo.transport.base import TrafficLedger, accept_calibration, failure_kind
from fedgrpo.transport.json_body import (
    calibration_reply_body,
    calibration_request_body,
    score_reply_body,
    score_request_body,
)
from fedgrpo.transport.session import Arrival, ScoringSession, score_round, wire_endpoint
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    ScoreRequest,
    ScoreResults,
    WireScoreRequest,
)


class EmbeddedTransport:
    def __init__(self, experts: Mapping[str, Any], *, timeout_s: float = 600.0,
                 max_workers: int | None = None, style: PromptStyle | None = None,
                 stores: Mapping[str, Path] | None = None) -> None:
        """`experts`: expert id -> the client's expert (each declares its domain and what it reads
        through `hello`, as it would to the Flower engine), or an endpoint that speaks the wire
        itself (a site's `RemoteExpert`). `style` reads the candidates' final answers for the
        experts that read only those (None: every expert gets full texts). `stores`: expert id ->
        the directory where its endpoint keeps its question texts (a resumed run finds them)."""
        self._experts = dict(experts)
        self.experts = self._experts  # read-only use: the run report reads the clients' own logs
        self.endpoints = {expert_id: wire_endpoint(expert, (stores or {}).get(expert_id))
                          for expert_id, expert in self._experts.items()}
        self.expert_ids = tuple(self._experts)
        hellos = {expert_id: endpoint.hello() for expert_id, endpoint in self.endpoints.items()}
        self.expert_domains = {expert_id: hello.domain for expert_id, hello in hellos.items()}
        self.expert_privacy = {expert_id: hello.privacy for expert_id, hello in hellos.items()}
        self.session = ScoringSession(style, {expert_id: hello.reads for expert_id, hello in hellos.items()})
        self.timeout_s = timeout_s
        self.ledger = TrafficLedger()
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers or len(self._experts) or 1,
                                           thread_name_prefix="expert")

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        futures = {}
        size = len(calibration_request_body(request))
        for expert_id, endpoint in self.endpoints.items():
            self.ledger.record("calibrate", -1, expert_id, "down", request, size)
            futures[expert_id] = self._pool.submit(endpoint.calibrate, request)
        replies, failures = {}, {}
        for expert_id, future in futures.items():
            try:
                reply = future.result(timeout=self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any expert fault is recorded, not raised
                failures[expert_id] = _reason(exc)
                continue
            kept = accept_calibration(self.ledger, expert_id, request, reply,
                                      _body_size(calibration_reply_body, reply))
            if isinstance(kept, str):
                failures[expert_id] = kept
            else:
                replies[expert_id] = kept
        return replies, failures

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        return score_round(self.session, self.ledger, step, requests, self._exchange)

    def _exchange(self, step: int, requests: Mapping[str, WireScoreRequest]) -> dict[str, Arrival]:
        futures = {}
        for expert_id, request in requests.items():
            self.ledger.record("score", step, expert_id, "down", request, len(score_request_body(request)))
            futures[expert_id] = self._pool.submit(self.endpoints[expert_id].score, request)
        arrivals = {}
        for expert_id, future in futures.items():
            try:
                reply = future.result(timeout=self.timeout_s)
            except Exception as exc:  # noqa: BLE001
                arrivals[expert_id] = Arrival(reason=_reason(exc), kind=failure_kind(exc))
                continue
            arrivals[expert_id] = Arrival(reply, _body_size(score_reply_body, reply))
        return arrivals

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _body_size(encode: Any, reply: object) -> int | None:
    """What `reply` would weigh as the expert service's body; None for an object no body can hold
    (the reply contract refuses it before anything is recorded)."""
    try:
        return len(encode(reply))
    except Exception:  # noqa: BLE001 - a malformed reply of any shape
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, cf.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
