"""The Flower engine's transport: FedGRPO's requests over a Flower `Grid` (Simulation or Deployment).

One `query.hello` round at start-up maps each expert id to the SuperNode that serves it (node ids are
Flower's business and never leave this module). Calibration and scoring then send one message per
expert and wait for the replies with the grid's own `push_messages` / `pull_messages` (what
`Grid.send_and_receive` does inside), so that:

- every round has a deadline (`timeout_s`); an expert whose reply is missing then is a failure;
- a reply that arrives after its deadline, i.e. during a later round, is for another step: it is
  dropped and counted (`ledger.stale_replies`), never mixed into the current step;
- an error reply (the ClientApp raised) is a failure with the node's reason and the kind its error
  code carries (`flower_records.failure_kind_of_code`: a client whose privacy budget is spent stays
  BUDGET_SPENT across the trip).

Bytes go to the same `TrafficLedger` with the same byte model as the embedded engine, counted on the
value types before encoding, so both engines report identical payload bytes for identical traffic;
beside them, each message's wire bytes as Flower serializes it (`flower_records.message_bytes`).
Scoring rounds are the common round of every engine (`transport.session.score_round`: what each
expert reads, texts once, packed rewards).
Polling starts at 5 ms and backs off to `max_poll_s`: a fast expert is not held up by a fixed sleep
(Flower's grids sleep 0.1 s in Simulation, 3 s in Deployment between pulls). Pulling from the
in-memory Simulation grid is cheap, so it can poll often; a Deployment pull is an HTTP request to
the SuperLink (a few ms of its CPU), so 100 ms is the default ceiling there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedgrpo.data.prompts import PromptStyle
from fedgrpo.errors import FedGRPOError
from fedgrpo.transport.base import TrafficLedger, accept_calibration
from fedgrpo.transport.contract import check_size
from fedgrpo.transport.flower_records import (
    CALIBRATE,
    HELLO,
    SCORE,
    decode_calibration_reply,
    decode_hello_reply,
    decode_score_reply,
    encode_calibration_request,
    encode_score_request,
    failure_kind_of_code,
    message_bytes,
)
from fedgrpo.transport.session import Arrival, ScoringSession, score_round
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    FailureKind,
    Reads,
    ScoreRequest,
    ScoreResults,
    WireScoreRequest,
)

FIRST_POLL_S = 0.005


class FlowerTransport:
    def __init__(self, grid: Grid, expert_ids: Sequence[str], *, timeout_s: float = 600.0,
                 node_wait_s: float = 120.0, max_poll_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, style: PromptStyle | None = None) -> None:
        """Wait (at most `node_wait_s`) until a SuperNode has said hello for every expert id. `style`
        reads the candidates' final answers for the experts that read only those (None: every
        expert gets full texts)."""
        self._grid = grid
        self.timeout_s, self.max_poll_s = timeout_s, max_poll_s
        self.ledger = TrafficLedger()
        self._clock, self._sleep = clock, sleep
        # Requests whose deadline passed: message id -> (expert id, when sent). Their replies are stale.
        self._late: dict[str, tuple[str, float]] = {}
        self._node_of: dict[str, int] = {}
        self.expert_domains: dict[str, str] = {}
        self.expert_privacy: dict[str, dict] = {}  # what each expert declares of its guarantees
        self.expert_reads: dict[str, Reads] = {}  # what each expert's scorer reads
        self._connect(list(expert_ids), node_wait_s)
        self.expert_ids = tuple(expert_ids)  # the caller's order, as on the embedded engine
        self.session = ScoringSession(style, self.expert_reads)

    # -- start-up ------------------------------------------------------------------------------

    def _connect(self, wanted: list[str], node_wait_s: float) -> None:
        """Say hello to every node until each wanted expert has one. A node whose hello fails (its
        expert service is still loading, say) is asked again; its last error is reported if the
        deadline passes."""
        deadline = self._clock() + node_wait_s
        greeted: set[int] = set()
        errors: dict[int, str] = {}
        others: dict[str, int] = {}  # nodes that serve experts this run does not use
        while True:
            new = [n for n in self._grid.get_node_ids() if n not in greeted]
            if new:
                remaining = max(deadline - self._clock(), 1.0)
                replies, _ = self._round({n: (HELLO, RecordDict(), "hello") for n in new}, remaining)
                for node, reply in replies.items():
                    if reply.has_error():
                        errors[node] = reply.error.reason or "error reply"
                        continue
                    greeted.add(node)
                    errors.pop(node, None)
                    hello = decode_hello_reply(reply.content)
                    expert_id = hello.expert_id
                    if expert_id in self._node_of and self._node_of[expert_id] != node:
                        raise FedGRPOError(
                            f"two SuperNodes serve expert {expert_id!r}; give each site its own "
                            "expert-id (or partition-id) in its --node-config")
                    (self._node_of if expert_id in wanted else others)[expert_id] = node
                    self.expert_domains[expert_id] = hello.domain
                    self.expert_privacy[expert_id] = hello.privacy
                    self.expert_reads[expert_id] = hello.reads
            missing = [e for e in wanted if e not in self._node_of]
            if not missing:
                return
            if self._clock() >= deadline:
                extra = f"; nodes serve {', '.join(sorted(others))} instead" if others else ""
                if errors:
                    extra += "; a node answered: " + "; ".join(sorted(set(errors.values())))[:300]
                raise FedGRPOError(
                    f"no SuperNode answered for expert(s) {', '.join(missing)} within {node_wait_s:g} s"
                    f"{extra}; start their SuperNodes (and expert services) or raise node_wait_s")
            self._sleep(1.0 if errors else 0.2)

    # -- the ExpertTransport protocol -----------------------------------------------------------

    def calibrate_round(self, request: CalibrationRequest) -> tuple[dict[str, CalibrationReply], dict[str, str]]:
        messages = {expert_id: (CALIBRATE, encode_calibration_request(request), "calibrate")
                    for expert_id in self.expert_ids}
        arrived, failed = self._exchange(messages, lambda e, size: self.ledger.record(
            "calibrate", -1, e, "down", request, size))
        failures = {expert_id: reason for expert_id, (reason, _) in failed.items()}
        replies = {}
        for expert_id, message in arrived.items():
            try:
                size = message_bytes(message)
                check_size(size)
                reply = decode_calibration_reply(message.content)
            except (KeyError, TypeError, ValueError) as exc:  # ReplyRefused is a ValueError
                self.ledger.count_refused(expert_id)
                failures[expert_id] = f"refused calibration reply: {exc}"
                continue
            kept = accept_calibration(self.ledger, expert_id, request, reply, size)
            if isinstance(kept, str):
                failures[expert_id] = kept
            else:
                replies[expert_id] = kept
        return replies, failures

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        return score_round(self.session, self.ledger, step, requests, self._exchange_scores)

    def _exchange_scores(self, step: int, requests: Mapping[str, WireScoreRequest]) -> dict[str, Arrival]:
        messages = {e: (SCORE, encode_score_request(r), str(step)) for e, r in requests.items()}
        arrived, failed = self._exchange(messages, lambda e, size: self.ledger.record(
            "score", step, e, "down", requests[e], size))
        arrivals = {e: Arrival(reason=reason, kind=kind) for e, (reason, kind) in failed.items()}
        for expert_id, message in arrived.items():
            try:
                size = message_bytes(message)
                check_size(size)
                arrivals[expert_id] = Arrival(decode_score_reply(message.content), size)
            except (KeyError, TypeError, ValueError) as exc:  # ReplyRefused is a ValueError
                arrivals[expert_id] = Arrival(refused=exc)
        return arrivals

    def close(self) -> None:
        """Nothing to release: the grid belongs to the ServerApp."""

    # -- one round: push, then pull until every reply or the deadline ---------------------------

    def _exchange(self, messages: Mapping[str, tuple[str, RecordDict, str]],
                  sent: Callable[[str, int], object] | None = None,
                  ) -> tuple[dict[str, Message], dict[str, tuple[str, FailureKind]]]:
        """expert id -> (type, content, group) ==> (replies with content, (failure reason, kind) by
        expert); `sent(expert id, wire bytes)` is told of every message as it is pushed."""
        by_node = {self._node_of[e]: spec for e, spec in messages.items()}
        expert_of = {self._node_of[e]: e for e in messages}
        replies, failures = self._round(by_node, self.timeout_s,
                                        None if sent is None else lambda node, size: sent(expert_of[node], size))
        arrived: dict[str, Message] = {}
        out_failures: dict[str, tuple[str, FailureKind]] = {}
        for node, expert_id in expert_of.items():
            reply = replies.get(node)
            if node in failures:
                out_failures[expert_id] = (failures[node], FailureKind.ERROR)
            elif reply is None:
                out_failures[expert_id] = (f"timed out after {self.timeout_s:g} s", FailureKind.TIMED_OUT)
            elif reply.has_error():
                out_failures[expert_id] = (f"node error: {reply.error.reason}",
                                           failure_kind_of_code(reply.error.code))
            else:
                arrived[expert_id] = reply
        return arrived, out_failures

    def _round(self, specs: Mapping[int, tuple[str, RecordDict, str]], timeout_s: float,
               on_sent: Callable[[int, int], object] | None = None) -> tuple[dict[int, Message], dict[int, str]]:
        sent = {node: Message(content, dst_node_id=node, message_type=kind, group_id=group)
                for node, (kind, content, group) in specs.items()}
        if on_sent is not None:  # each message's wire bytes, measured before Flower takes it
            for node, message in sent.items():
                on_sent(node, message_bytes(message))
        accepted = {mid for mid in self._grid.push_messages(list(sent.values())) if mid}
        now = self._clock()
        waiting: dict[str, int] = {}
        failures: dict[int, str] = {}
        for node, message in sent.items():
            mid = message.metadata.message_id
            if mid in accepted:
                waiting[mid] = node
            else:
                failures[node] = "the SuperLink refused the message"
        replies: dict[int, Message] = {}
        deadline, delay = now + timeout_s, FIRST_POLL_S
        self._forget_old_late(now)
        while waiting:
            for reply in self._grid.pull_messages(list(waiting) + list(self._late)):
                mid = reply.metadata.reply_to_message_id
                if mid in waiting:
                    replies[waiting.pop(mid)] = reply
                elif self._late.pop(mid, None) is not None:
                    self.ledger.stale_replies += 1  # answers an earlier round: dropped
            remaining = deadline - self._clock()
            if not waiting or remaining <= 0:
                break
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, self.max_poll_s)
        for mid, node in waiting.items():
            self._late[mid] = (str(node), self._clock())
        return replies, failures

    def _forget_old_late(self, now: float) -> None:
        # A reply later than a day is not coming; stop asking for it (Flower's default TTL is 12 h).
        for mid in [m for m, (_, t) in self._late.items() if now - t > 86_400]:
            del self._late[mid]

