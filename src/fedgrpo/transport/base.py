"""The expert and transport protocols, and the traffic ledger.

Two levels, two names: an `Expert` answers one request (`calibrate`, `score`); an `ExpertTransport`
sends a round of requests to many experts (`calibrate_round`, `score_round`) and reports what came
back. Failure is part of the API: `score_round` returns the replies that arrived plus a `.failures`
list (an expert that raised, timed out, or answered with the wrong number of floats); the caller turns
a missing reply into NaN rewards, which get advantage 0. A reply for another step is dropped and counted.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fedgrpo.core.comm import payload_bytes
from fedgrpo.transport.contract import ReplyRefused, check_calibration_reply, check_score_reply
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    ScoreReply,
    ScoreRequest,
    ScoreResults,
)


class Expert(Protocol):
    """One expert as every engine reaches it: in-process (`scorers.expert.LocalExpert`) or over its
    site's loopback (`engines.expert_service.RemoteExpert`)."""

    def hello(self) -> tuple[str, str]:
        """(expert id, the domain it declares)."""
        ...

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        """One correctness bit per auxiliary item."""
        ...

    def score(self, request: ScoreRequest) -> ScoreReply:
        """One reward per candidate."""
        ...


class ExpertTransport(Protocol):
    expert_ids: tuple[str, ...]
    expert_domains: dict[str, str]  # expert id -> the domain it declares (its main one)
    ledger: TrafficLedger

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        """Send the auxiliary set to every expert; (replies by expert, failure reason by expert)."""
        ...

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        """Send each expert its request for this step, in parallel."""
        ...

    def close(self) -> None: ...


@dataclass
class TrafficLedger:
    """Payload bytes per (phase, step, expert, direction), and the values each expert released
    (phase, step, expert, count: rewards that are not NaN, calibration values; what a privacy
    accountant composes); thread-safe."""

    records: list[tuple[str, int, str, str, int]] = field(default_factory=list)
    releases: list[tuple[str, int, str, int]] = field(default_factory=list)
    stale_replies: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # expert id -> replies refused by the contract
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def release(self, phase: str, step: int, expert_id: str, count: int) -> None:
        with self._lock:
            self.releases.append((phase, step, expert_id, count))

    def released(self) -> dict[str, int]:
        """Values released per expert over the run."""
        out: dict[str, int] = {}
        for _, _, expert_id, count in self.releases:
            out[expert_id] = out.get(expert_id, 0) + count
        return out

    def count_refused(self, expert_id: str) -> None:
        with self._lock:
            self.refused[expert_id] = self.refused.get(expert_id, 0) + 1

    def record(self, phase: str, step: int, expert_id: str, direction: str, message: object) -> int:
        size = payload_bytes(message)
        with self._lock:
            self.records.append((phase, step, expert_id, direction, size))
        return size

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for phase, _, _, direction, size in self.records:
            out[direction] += size
            out[f"{phase}_{direction}"] += size
        return dict(out)

    def per_expert(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"down": 0, "up": 0})
        for _, _, expert_id, direction, size in self.records:
            out[expert_id][direction] += size
        return dict(out)

    def per_step(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = defaultdict(lambda: {"down": 0, "up": 0})
        for phase, step, _, direction, size in self.records:
            if phase == "score":
                out[step][direction] += size
        return dict(sorted(out.items()))


class LedgerFile:
    """Mirror of a traffic ledger in JSON Lines files (`traffic.jsonl` for the byte records,
    `traffic.jsonl`'s sibling `releases.jsonl` for the release counts), appended after every step
    (only new records: rewriting the whole file each step would grow quadratically) and read back
    into the ledger on resume.

    `resume_step` is the step of the checkpoint a resumed run starts from: scoring records of
    generations at or after it are dropped (the resumed run makes those generations again and
    records them anew), and so is a last line cut short by a kill, so the resumed run's bytes equal
    an uninterrupted run's; calibration records are dropped unless `keep_calibration` (the run
    will calibrate again). The trimmed files replace the old ones atomically."""

    def __init__(self, ledger: TrafficLedger, path: Path, resume_step: int | None = None,
                 keep_calibration: bool = True) -> None:
        self.ledger, self.path = ledger, path
        self.releases_path = path.with_name("releases.jsonl")

        def keep(record: tuple) -> bool:
            if record[0] == "calibrate":
                return keep_calibration
            return resume_step is None or record[1] < resume_step

        ledger.records.extend(_read_back(path, keep))
        ledger.releases.extend(_read_back(self.releases_path, keep))
        self.written = len(ledger.records)
        self.releases_written = len(ledger.releases)

    def flush(self) -> None:
        self.written = _append(self.path, self.ledger.records, self.written)
        self.releases_written = _append(self.releases_path, self.ledger.releases, self.releases_written)


def _read_back(path: Path, keep: Callable[[tuple], bool]) -> list[tuple]:
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = tuple(json.loads(line))
        except ValueError:
            continue  # the line a kill cut short
        if keep(record):
            kept.append(record)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(list(r)) + "\n" for r in kept))
    os.replace(tmp, path)
    return kept


def _append(path: Path, records: list, written: int) -> int:
    new = records[written:]
    if new:
        with path.open("a") as fh:
            fh.writelines(json.dumps(record) + "\n" for record in new)
    return written + len(new)


# -- what every engine does with a reply that arrived (one place, so engines cannot drift apart) ----


def accept_calibration(ledger: TrafficLedger, expert_id: str, request: CalibrationRequest,
                       reply: object) -> str | None:
    """Record an arrived calibration reply; return why it is refused (`transport.contract`), else None.
    A refused reply is counted (``ledger.refused``)."""
    try:
        reply = check_calibration_reply(reply, request)
    except ReplyRefused as exc:
        ledger.count_refused(expert_id)
        return f"refused calibration reply: {exc}"
    ledger.record("calibrate", -1, expert_id, "up", reply)
    ledger.release("calibrate", -1, expert_id, len(reply.correct))
    return None


def accept_score(ledger: TrafficLedger, step: int, expert_id: str, request: ScoreRequest,
                 reply: object) -> ScoreReply | str:
    """The reply to keep, or why it is refused: one that breaks the contract (`transport.contract`:
    wrong type or length, a reward outside the declared range; counted in ``ledger.refused``) or one
    for another step (stale: counted in ``ledger.stale_replies``)."""
    try:
        kept = check_score_reply(reply, request)
    except ReplyRefused as exc:
        ledger.count_refused(expert_id)
        return f"refused score reply: {exc}"
    if kept.step != step:
        ledger.stale_replies += 1
        return f"stale reply for step {kept.step}"
    ledger.record("score", step, expert_id, "up", kept)
    ledger.release("score", step, expert_id, sum(1 for r in kept.rewards if not math.isnan(r)))
    return kept
