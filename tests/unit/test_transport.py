"""The embedded transport: parallel calls, failures recorded (never zero-filled) with their kind, bytes
counted; the wrappers' common floor forwards what a wrapper does not change."""

from __future__ import annotations

import time

import pytest

from fedgrpo.core.comm import payload_bytes
from fedgrpo.core.packing import pack_rewards
from fedgrpo.privacy.client import PrivacyBudgetSpent
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.failover import FailoverTransport
from fedgrpo.transport.json_body import score_reply_body, score_request_body
from fedgrpo.transport.recheck import ProbeBook, RecheckTransport
from fedgrpo.transport.timed import TimedTransport
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    FailureKind,
    Hello,
    QuestionText,
    Reads,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    WireItem,
    WireScoreReply,
    WireScoreRequest,
)


class FakeExpert:
    def __init__(self, behaviour="ok", delay=0.0):
        self.behaviour, self.delay = behaviour, delay

    def hello(self) -> Hello:
        return Hello("expert", "arithmetic")

    def score(self, request: ScoreRequest) -> ScoreReply:
        time.sleep(self.delay)
        n = request.num_candidates
        if self.behaviour == "raise":
            raise RuntimeError("model crashed")
        if self.behaviour == "budget":
            raise PrivacyBudgetSpent("privacy budget spent (40 values released)")
        if self.behaviour == "short":
            return ScoreReply(request.step, (1.0,) * (n - 1))
        if self.behaviour == "stale":
            return ScoreReply(request.step - 1, (1.0,) * n)
        return ScoreReply(request.step, tuple(float(i % 2) for i in range(n)))

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        if self.behaviour == "raise":
            raise RuntimeError("no model")
        return CalibrationReply((1.0,) * len(request.items))


def _request(step=5, g=4) -> ScoreRequest:
    return ScoreRequest(step, (ScoreItem("q1", "basic_arithmetic", "Calculate 1 + 1.",
                                         tuple(f"{i}</answer>" for i in range(g))),))


def test_replies_arrive_and_bytes_add_up_per_message():
    transport = EmbeddedTransport({"a": FakeExpert(), "b": FakeExpert()})
    results = transport.score_round(5, {"a": _request(), "b": _request()})
    assert set(results.replies) == {"a", "b"} and not results.failures
    assert results.replies["a"].rewards == (0.0, 1.0, 0.0, 1.0)
    # What travelled: an expert that declares nothing gets full texts, its question's text the first
    # time; its reply's four 0/1 rewards go up as four bits.
    item = _request().items[0]
    sent = WireScoreRequest(5, transport.session.name, Reads.TEXTS,
                            (WireItem(0, QuestionText(item.question_id, item.generator, item.question), item.candidates),))
    reply = WireScoreReply(5, pack_rewards((0.0, 1.0, 0.0, 1.0)))
    # The ledger is the sum of the per-message byte model, both directions...
    totals = transport.ledger.totals()
    assert totals["down"] == 2 * payload_bytes(sent) and totals["up"] == 2 * payload_bytes(reply)
    assert transport.ledger.per_step()[5] == {"down": totals["down"], "up": totals["up"]}
    # ... and, beside it, of each message's wire bytes: here the expert service's JSON body it would be.
    wire = transport.ledger.wire_totals()
    assert wire["down"] == 2 * len(score_request_body(sent)) and wire["up"] == 2 * len(score_reply_body(reply))


@pytest.mark.parametrize("behaviour, reason, kind", [
    ("raise", "RuntimeError: model crashed", FailureKind.ERROR),
    ("short", "3 rewards for 4", FailureKind.REFUSED),
    ("stale", "stale reply", FailureKind.STALE),
    ("budget", "PrivacyBudgetSpent: privacy budget spent", FailureKind.BUDGET_SPENT),
])
def test_a_faulty_expert_is_a_recorded_failure_of_its_kind(behaviour, reason, kind):
    transport = EmbeddedTransport({"good": FakeExpert(), "bad": FakeExpert(behaviour)})
    results = transport.score_round(5, {"good": _request(), "bad": _request()})
    assert list(results.replies) == ["good"]
    [failure] = results.failures
    assert failure.expert_id == "bad" and reason in failure.reason and failure.step == 5
    assert failure.kind is kind  # set where the failure is made; the reason's words stay for people
    assert transport.ledger.stale_replies == (1 if behaviour == "stale" else 0)


def test_a_slow_expert_times_out():
    transport = EmbeddedTransport({"slow": FakeExpert(delay=0.5), "fast": FakeExpert()}, timeout_s=0.1)
    results = transport.score_round(1, {"slow": _request(1), "fast": _request(1)})
    assert list(results.replies) == ["fast"]
    assert results.failures[0].reason == "timed out" and results.failures[0].kind is FailureKind.TIMED_OUT


def test_calibration_failures_are_reported_per_expert():
    transport = EmbeddedTransport({"a": FakeExpert(), "b": FakeExpert("raise")})
    request = CalibrationRequest(())
    replies, failures = transport.calibrate_round(request)
    assert set(replies) == {"a"} and "RuntimeError" in failures["b"]


def test_every_reply_holds_only_floats():
    reply = EmbeddedTransport({"a": FakeExpert()}).score_round(2, {"a": _request(2)}).replies["a"]
    assert set(vars(reply)) == {"step", "rewards"}
    assert all(type(r) is float for r in reply.rewards)


class Closable(EmbeddedTransport):
    closed = False

    def close(self):
        self.closed = True
        super().close()


@pytest.mark.parametrize("wrap", [
    lambda inner: FailoverTransport(inner, {}),
    TimedTransport,
    lambda inner: RecheckTransport(inner, ProbeBook({}, extract=lambda c: c, is_right=lambda q, a: False), threshold=0.7),
], ids=["failover", "timed", "recheck"])
def test_every_wrapper_forwards_what_it_does_not_change(wrap):
    class Declaring(FakeExpert):
        def hello(self):
            return Hello("expert", "spelling", {"values": {"epsilon": 4.0}})

    inner = Closable({"a": Declaring(), "b": FakeExpert()})
    wrapped = wrap(inner)
    # The experts as the inner transport knows them, and its one ledger: bytes are counted once.
    assert wrapped.expert_ids == ("a", "b") and wrapped.ledger is inner.ledger
    assert wrapped.expert_domains == {"a": "spelling", "b": "arithmetic"}
    assert wrapped.expert_privacy == {"a": {"values": {"epsilon": 4.0}}, "b": {}}
    replies, failures = wrapped.calibrate_round(CalibrationRequest(()))
    assert set(replies) == {"a", "b"} and not failures
    assert wrapped.score_round(5, {"a": _request()}).replies["a"].rewards == (0.0, 1.0, 0.0, 1.0)
    wrapped.close()
    assert inner.closed
