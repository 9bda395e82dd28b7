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
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fedgrpo.core.comm import payload_bytes
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
    """Payload bytes per (phase, step, expert, direction); thread-safe."""

    records: list[tuple[str, int, str, str, int]] = field(default_factory=list)
    stale_replies: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
    """Mirror of a traffic ledger in a JSON Lines file (`traffic.jsonl`), appended after every step
    (only new records: rewriting the whole file each step would grow quadratically) and read back
    into the ledger on resume."""

    def __init__(self, ledger: TrafficLedger, path: Path) -> None:
        self.ledger, self.path = ledger, path
        if path.is_file():
            ledger.records.extend(tuple(json.loads(line)) for line in path.read_text().splitlines() if line)
        self.written = len(ledger.records)

    def flush(self) -> None:
        new = self.ledger.records[self.written:]
        if new:
            with self.path.open("a") as fh:
                fh.writelines(json.dumps(record) + "\n" for record in new)
            self.written += len(new)


# -- what every engine does with a reply that arrived (one place, so engines cannot drift apart) ----


def accept_calibration(ledger: TrafficLedger, expert_id: str, request: CalibrationRequest,
                       reply: CalibrationReply) -> str | None:
    """Record an arrived calibration reply; return why it is refused (wrong length), else None."""
    if len(reply.correct) != len(request.items):
        return f"{len(reply.correct)} bits for {len(request.items)} items"
    ledger.record("calibrate", -1, expert_id, "up", reply)
    return None


def accept_score(ledger: TrafficLedger, step: int, expert_id: str, request: ScoreRequest,
                 reply: ScoreReply) -> ScoreReply | str:
    """The reply to keep (infinite rewards made NaN), or why it is refused: a reply for another step
    (stale: counted in the ledger) or the wrong number or type of rewards."""
    if reply.step != step:
        ledger.stale_replies += 1
        return f"stale reply for step {reply.step}"
    expected = request.num_candidates
    if len(reply.rewards) != expected or not all(isinstance(r, float) for r in reply.rewards):
        return f"{len(reply.rewards)} rewards for {expected} candidates"
    ledger.record("score", step, expert_id, "up", reply)
    # An infinite reward would poison the group's mean and std: treat it as missing.
    return ScoreReply(step, tuple(math.nan if math.isinf(r) else r for r in reply.rewards))
