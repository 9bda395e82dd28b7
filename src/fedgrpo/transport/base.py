"""The expert and transport protocols, and the traffic ledger.

Two levels, two names: an `Expert` answers one request (`calibrate`, `score`); an `ExpertTransport`
sends a round of requests to many experts (`calibrate_round`, `score_round`) and reports what came
back. Between them sits the wire (`transport.session`): a transport reaches an expert through its
`Endpoint`, which speaks the wire messages (`types.WireScoreRequest`, packed replies); a client's
`ClientEndpoint` turns them into the resolved requests its `Expert` reads. Failure is part of the API: `score_round` returns the replies that arrived plus a `.failures`
list (an expert that raised, timed out, or answered with the wrong number of floats), each with its
kind (`types.FailureKind`), set where the failure is made (`failure_kind` reads an expert's
exception); the caller turns a missing reply into NaN rewards, which get advantage 0. A reply for
another step is dropped and counted.

`TransportWrapper` is the floor of every transport that wraps another (failover, timing, the
re-check): it forwards everything, so a wrapper states only what it changes.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fedgrpo.core.comm import payload_bytes
from fedgrpo.core.packing import unpack_rewards
from fedgrpo.durable import Journal
from fedgrpo.privacy.client import PrivacyBudgetSpent, calibration_keys
from fedgrpo.transport.contract import ReplyRefused, check_wire_calibration_reply
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    ExpertFailure,
    FailureKind,
    Hello,
    ScoreReply,
    ScoreRequest,
    ScoreResults,
    WireCalibrationReply,
    WireScoreReply,
    WireScoreRequest,
)


class Expert(Protocol):
    """One client's expert, as its scorer sees requests: in-process (`scorers.expert.LocalExpert`,
    wrapped for privacy or measurements) on every engine, behind its `ClientEndpoint`."""

    def hello(self) -> Hello:
        """Its expert id, the domain it declares, the privacy guarantees it declares, what it reads."""
        ...

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        """One correctness bit per auxiliary item."""
        ...

    def score(self, request: ScoreRequest) -> ScoreReply:
        """One reward per candidate (per distinct answer in ANSWERS form)."""
        ...


class Endpoint(Protocol):
    """An expert as a transport reaches it, on the wire: a client's `transport.session.ClientEndpoint`
    or a site's service over its loopback (`engines.expert_service.RemoteExpert`)."""

    def hello(self) -> Hello: ...

    def calibrate(self, request: CalibrationRequest) -> WireCalibrationReply:
        """One bit per auxiliary item, packed."""
        ...

    def score(self, request: WireScoreRequest) -> WireScoreReply:
        """One packed reward per value of the request."""
        ...


class ExpertTransport(Protocol):
    expert_ids: tuple[str, ...]
    expert_domains: dict[str, str]  # expert id -> the domain it declares (its main one)
    expert_privacy: dict[str, dict]  # expert id -> the privacy guarantees it declares (hello)
    ledger: TrafficLedger

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        """Send the auxiliary set to every expert; (replies by expert, failure reason by expert)."""
        ...

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        """Send each expert its request for this step, in parallel."""
        ...

    def close(self) -> None: ...


class TransportWrapper:
    """A transport around another (`inner`) that forwards everything: the experts' ids, declared
    domains and privacy, the ledger, calibration, scoring and `close`. A wrapper overrides only what
    it changes (`FailoverTransport` scoring, `TimedTransport` the clock around it), so what it leaves
    alone cannot drift from the inner transport."""

    def __init__(self, inner: ExpertTransport) -> None:
        self.inner = inner

    @property
    def expert_ids(self) -> tuple[str, ...]:
        return self.inner.expert_ids

    @property
    def expert_domains(self) -> dict[str, str]:
        return self.inner.expert_domains

    @property
    def expert_privacy(self) -> dict[str, dict]:
        return self.inner.expert_privacy

    @property
    def ledger(self) -> TrafficLedger:
        return self.inner.ledger

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        return self.inner.calibrate_round(request)

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        return self.inner.score_round(step, requests)

    def close(self) -> None:
        self.inner.close()


class ExpertFault(RuntimeError):
    """An expert's failure raised by a proxy that knows its kind (a site's expert service reports the
    kind its expert failed with), so the kind survives the hop: `failure_kind` reads it."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.ERROR) -> None:
        super().__init__(message)
        self.kind = kind


def failure_kind(exc: BaseException) -> FailureKind:
    """The kind of failure an expert's exception stands for; ERROR when nothing more is known."""
    if isinstance(exc, ExpertFault):
        return exc.kind
    if isinstance(exc, PrivacyBudgetSpent):
        return FailureKind.BUDGET_SPENT
    if isinstance(exc, ReplyRefused):  # the expert's own side of the contract stopped its reply
        return FailureKind.REFUSED
    if isinstance(exc, TimeoutError):  # concurrent.futures' and socket's timeouts are this one
        return FailureKind.TIMED_OUT
    return FailureKind.ERROR


# One message: (phase, step, expert id, direction, payload bytes, wire bytes). Wire bytes are the
# message's serialized size as it travels (the engine says how: a Flower message's serialized
# objects, the expert service's HTTP body); None in a ledger file written before they were recorded.
Record = tuple[str, int, str, str, int, int | None]


@dataclass
class TrafficLedger:
    """Bytes per message (`Record`): the payload model (`core.comm.payload_bytes`) beside the
    serialized size as it travels, so the two compare per message; and, when `track_releases`
    (per-value LDP is on), the distinct values each expert released as the server saw them: the keys
    (`privacy.client.value_key`) of the values in its accepted replies, per (phase, step, expert).
    A value asked again is the same release, so the count is of distinct keys; thread-safe."""

    records: list[Record] = field(default_factory=list)
    releases: list[tuple[str, int, str, list[str]]] = field(default_factory=list)
    stale_replies: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # expert id -> replies refused by the contract
    track_releases: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def release(self, phase: str, step: int, expert_id: str, keys: list[str]) -> None:
        if not self.track_releases:
            return
        with self._lock:
            self.releases.append((phase, step, expert_id, list(keys)))

    def released(self) -> dict[str, dict[str, int]]:
        """Distinct values released per expert and phase (calibrate, score) over the run, as the
        server counts them."""
        seen: dict[str, dict[str, set[str]]] = {}
        for phase, _, expert_id, keys in self.releases:
            seen.setdefault(expert_id, {}).setdefault(phase, set()).update(keys)
        return {e: {phase: len(keys) for phase, keys in by.items()} for e, by in seen.items()}

    def count_refused(self, expert_id: str) -> None:
        with self._lock:
            self.refused[expert_id] = self.refused.get(expert_id, 0) + 1

    def record(self, phase: str, step: int, expert_id: str, direction: str, message: object,
               wire_bytes: int | None) -> int:
        """Record one message: its payload (the byte model of `message`) and `wire_bytes`."""
        size = payload_bytes(message)
        with self._lock:
            self.records.append((phase, step, expert_id, direction, size, wire_bytes))
        return size

    def totals(self) -> dict[str, int]:
        """Payload bytes per direction, and per phase and direction."""
        out: dict[str, int] = defaultdict(int)
        for phase, _, _, direction, size, _ in self.records:
            out[direction] += size
            out[f"{phase}_{direction}"] += size
        return dict(out)

    def wire_totals(self) -> dict[str, int]:
        """Wire bytes as `totals` adds up payload bytes, over the records that hold them (with
        ``unrecorded``: how many do not, from a ledger file older than the wire column)."""
        out: dict[str, int] = defaultdict(int)
        out["unrecorded"] = 0
        for phase, _, _, direction, _, wire in self.records:
            if wire is None:
                out["unrecorded"] += 1
                continue
            out[direction] += wire
            out[f"{phase}_{direction}"] += wire
        return dict(out)

    def per_expert(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"down": 0, "up": 0})
        for _, _, expert_id, direction, size, _ in self.records:
            out[expert_id][direction] += size
        return dict(out)

    def per_step(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = defaultdict(lambda: {"down": 0, "up": 0})
        for phase, step, _, direction, size, _ in self.records:
            if phase == "score":
                out[step][direction] += size
        return dict(sorted(out.items()))


class LedgerFile:
    """Mirror of a traffic ledger in JSON Lines journals (`traffic.jsonl` for the byte records, one
    `Record` a line: [phase, step, expert, direction, payload bytes, wire bytes]; a line of a file
    written before the wire column has five entries and reads as wire bytes None; its sibling
    `releases.jsonl` for the released keys), appended after every step (only new
    records: rewriting the whole file each step would grow quadratically) and read back into the
    ledger on resume.

    `resume_step` is the step of the checkpoint a resumed run starts from: scoring records of
    generations at or after it are dropped (the resumed run makes those generations again and
    records them anew), and so is a last line cut short by a kill, so the resumed run's bytes equal
    an uninterrupted run's; calibration records are dropped unless `keep_calibration` (the run
    will calibrate again). The trimmed journals replace the old ones atomically."""

    def __init__(self, ledger: TrafficLedger, path: Path, resume_step: int | None = None,
                 keep_calibration: bool = True) -> None:
        self.ledger = ledger
        self.journal, self.releases_journal = Journal(path), Journal(path.with_name("releases.jsonl"))

        def keep(record: list) -> bool:
            if record[0] == "calibrate":
                return keep_calibration
            return resume_step is None or record[1] < resume_step

        ledger.records.extend(as_record(r) for r in self.journal.keep(keep))
        ledger.releases.extend(tuple(r) for r in self.releases_journal.keep(keep))
        self.written = len(ledger.records)
        self.releases_written = len(ledger.releases)

    def flush(self) -> None:
        self.written += self.journal.append(self.ledger.records[self.written:])
        self.releases_written += self.releases_journal.append(self.ledger.releases[self.releases_written:])


def as_record(line: list | tuple) -> Record:
    """A ledger file's line as a `Record` (a five-entry line of an older file: wire bytes None)."""
    phase, step, expert_id, direction, size, *wire = line
    return (phase, step, expert_id, direction, size, wire[0] if wire else None)


# -- what every engine does with a reply that arrived (one place, so engines cannot drift apart) ----
# (Score replies: `transport.session.accept_score`, which also maps them back to the candidates.)


def accept_calibration(ledger: TrafficLedger, expert_id: str, request: CalibrationRequest,
                       reply: object, wire_bytes: int | None) -> CalibrationReply | str:
    """The arrived calibration reply, checked (`transport.contract`), recorded and unpacked, or why
    it is refused. A refused reply is counted (``ledger.refused``)."""
    try:
        kept = check_wire_calibration_reply(reply, request)
    except ReplyRefused as exc:
        ledger.count_refused(expert_id)
        return f"refused calibration reply: {exc}"
    ledger.record("calibrate", -1, expert_id, "up", kept, wire_bytes)
    if ledger.track_releases:
        ledger.release("calibrate", -1, expert_id, calibration_keys(request))
    return CalibrationReply(tuple(float(v) for v in unpack_rewards(kept.correct, len(request.items))))


def refuse_score(ledger: TrafficLedger, step: int, expert_id: str, exc: Exception) -> ExpertFailure:
    """A score reply refused by the contract (`exc` says how): counted, and the failure it is."""
    ledger.count_refused(expert_id)
    return ExpertFailure(expert_id, step, f"refused score reply: {exc}", FailureKind.REFUSED)
