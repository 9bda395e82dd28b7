"""The persistent expert service and its client: the deployment ClientApp's forwarding path; the
service's request checks before the body is read (Content-Length, JSON) and a fault's kind carried to
the caller. Hostile requests over the port are fuzzed in tests/property/test_request_contract.py.

Run: pytest tests/unit/test_expert_service.py
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from fedgrpo.core.packing import pack_rewards
from fedgrpo.engines.expert_service import (
    ExpertService,
    ExpertServiceError,
    RemoteExpert,
    content_length,
    parse_json_body,
)
from fedgrpo.privacy.client import PrivacyBudgetSpent
from fedgrpo.transport.contract import MAX_REQUEST_BYTES, MAX_TEXT_CHARS, RequestRefused
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.json_body import score_request_body
from fedgrpo.types import (
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    FailureKind,
    Hello,
    QuestionText,
    Reads,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    WireCalibrationReply,
    WireItem,
    WireScoreReply,
    WireScoreRequest,
)


class Expert:
    def __init__(self, expert_id: str = "client-3", domain: str = "spelling", fail: bool | str = False):
        self.expert_id, self.domain, self.fail = expert_id, domain, fail

    def hello(self) -> Hello:
        return Hello(self.expert_id, self.domain, {"records": {"epsilon": 8.0}})

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        return CalibrationReply(tuple(1.0 if i.answer == "4" else 0.0 for i in request.items))

    def score(self, request: ScoreRequest) -> ScoreReply:
        if self.fail == "budget":
            raise PrivacyBudgetSpent("privacy budget spent (30 values released)")
        if self.fail:
            raise RuntimeError("out of memory")
        return ScoreReply(request.step, tuple(float(len(c) % 2) for i in request.items for c in i.candidates))


def _wire(step: int = 0, candidates=("x",), text: bool = True, reads=Reads.TEXTS, session="s") -> WireScoreRequest:
    """A one-question wire request (its text with it unless `text` is False)."""
    question = QuestionText("q", "spell_backward", "Spell 'ab' backward.") if text else None
    return WireScoreRequest(step, session, reads, (WireItem(0, question, tuple(candidates)),))


@pytest.fixture
def service():
    running = ExpertService(Expert("client-3", "spelling")).start()
    yield running
    running.stop()


def test_the_service_answers_like_the_expert_it_holds(service):
    client = RemoteExpert(service.url, timeout_s=5)
    assert client.hello() == Hello("client-3", "spelling", {"records": {"epsilon": 8.0}})
    calibration = CalibrationRequest((CalibrationItem("a1", "basic_arithmetic", "2 + 2?", "4"),
                                      CalibrationItem("a2", "basic_arithmetic", "2 + 3?", "6")))
    assert client.calibrate(calibration) == WireCalibrationReply(pack_rewards((1.0, 0.0)))
    assert client.score(_wire(5, ("ba", "b", "é"))) == WireScoreReply(5, pack_rewards((0.0, 1.0, 1.0)))


def test_the_service_keeps_a_sessions_texts_and_asks_for_one_it_lacks(service):
    client = RemoteExpert(service.url, timeout_s=5)
    assert client.score(_wire(1, ("ba",))).step == 1
    # The same session again: the question's number alone is enough.
    assert client.score(_wire(2, ("ba", "b"), text=False)) == WireScoreReply(2, pack_rewards((0.0, 1.0)))
    # Another session (a restarted server) or a restarted service: the service says what it lacks, typed.
    with pytest.raises(ExpertServiceError, match="unknown here") as caught:
        client.score(_wire(3, ("ba",), text=False, session="another"))
    assert caught.value.kind is FailureKind.NEEDS_TEXT


def test_the_wire_bytes_the_embedded_engine_records_are_the_bodies_that_travel(service):
    """Through a real service: the ledger's wire bytes of every message are the HTTP bodies posted and
    read back, and the embedded engine records the same sizes without a service."""
    bodies: list[tuple[str, int]] = []

    class Measured(RemoteExpert):
        def _call(self, method, path, data=None):
            reply = super()._call(method, path, data)
            if method == "POST":
                bodies.extend([("down", len(data)), ("up", len(reply))])
            return reply

    remote = EmbeddedTransport({"client-3": Measured(service.url, timeout_s=5)}, timeout_s=5)
    local = EmbeddedTransport({"client-3": Expert("client-3", "spelling")}, timeout_s=5)
    for transport in (remote, local):
        transport.calibrate_round(CalibrationRequest((CalibrationItem("a1", "basic_arithmetic", "2 + 2?", "4"),)))
        for step in (1, 2):
            request = ScoreRequest(step, (ScoreItem("q", "spell_backward", "Spell 'ab' backward.", ("ba", "b")),))
            assert transport.score_round(step, {"client-3": request}).replies
    assert [(r[3], r[5]) for r in remote.ledger.records] == bodies
    assert [r[5] for r in local.ledger.records] == [size for _, size in bodies]


def test_a_scorer_fault_reaches_the_caller_as_one_line():
    faulty = ExpertService(Expert("client-0", "arithmetic", fail=True)).start()
    try:
        with pytest.raises(ExpertServiceError, match="RuntimeError: out of memory"):
            RemoteExpert(faulty.url, timeout_s=5).score(_wire())
    finally:
        faulty.stop()


def test_an_unreachable_service_is_an_error_not_a_hang(service):
    url = service.url
    service.stop()
    with pytest.raises(ExpertServiceError, match="unreachable"):
        RemoteExpert(url, timeout_s=2).hello()


def test_the_service_listens_on_the_loopback_by_default(service):
    assert service.url.startswith("http://127.0.0.1:")


def test_a_spent_budget_reaches_the_caller_typed_across_the_hop():
    spent = ExpertService(Expert("client-0", "arithmetic", fail="budget")).start()
    try:
        remote = RemoteExpert(spent.url, timeout_s=5)
        with pytest.raises(ExpertServiceError, match="PrivacyBudgetSpent: privacy budget spent") as caught:
            remote.score(_wire())
        assert caught.value.kind is FailureKind.BUDGET_SPENT
        # An engine that calls the remote expert records the kind the service reported.
        [failure] = EmbeddedTransport({"client-0": remote}, timeout_s=5).score_round(
            0, {"client-0": ScoreRequest(0, (ScoreItem("q", "g", "t", ("x",)),))}).failures
        assert failure.kind is FailureKind.BUDGET_SPENT and "privacy budget spent" in failure.reason
    finally:
        spent.stop()


def test_a_service_slower_than_the_deadline_is_a_timeout():
    class Slow(Expert):
        def score(self, request):
            time.sleep(1.0)
            return super().score(request)

    slow = ExpertService(Slow()).start()
    try:
        with pytest.raises(ExpertServiceError, match="timed out") as caught:
            RemoteExpert(slow.url, timeout_s=0.2).score(_wire())
        assert caught.value.kind is FailureKind.TIMED_OUT
    finally:
        slow.stop()


def _post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.putrequest("POST", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_a_string_as_candidates_is_refused_not_scored_character_by_character(service):
    body = json.dumps({"step": 1, "session": "s", "reads": "answers", "refs": [0], "counts": [3],
                       "answers": "abc"}).encode()
    status, reply = _post(service.url, "/score", body, {"Content-Length": str(len(body))})
    assert status == 400 and reply == {"error": "malformed request: answers is a string, not a list of texts"}


def test_a_body_too_large_is_refused_from_its_declared_length_without_being_sent(service):
    # Only the headers are sent: had the service waited for the body, this would time out.
    status, reply = _post(service.url, "/score", b"", {"Content-Length": str(10**12)})
    assert status == 400 and "more than the" in reply["error"]


def test_the_client_refuses_to_send_what_the_service_would_refuse(service):
    huge = WireScoreRequest(0, "s", Reads.ANSWERS, tuple(WireItem(i, None, ("x" * MAX_TEXT_CHARS,)) for i in range(20)))
    assert len(score_request_body(huge)) > MAX_REQUEST_BYTES
    with pytest.raises(RequestRefused, match=f"more than the {MAX_REQUEST_BYTES}"):
        RemoteExpert(service.url, timeout_s=5).score(huge)


@pytest.mark.parametrize("values, reason", [
    (None, "no Content-Length"), ([], "no Content-Length"), (["12", "12"], "2 Content-Length headers"),
    (["abc"], "not a byte count"), (["-1"], "not a byte count"), (["+5"], "not a byte count"),
    (["1e3"], "not a byte count"), (["1_000"], "not a byte count"), (["٣"], "not a byte count"),
    ([str(MAX_REQUEST_BYTES + 1)], "more than the"), (["9" * 400], "not a byte count"),
])
def test_a_missing_or_bad_content_length_is_refused(values, reason):
    with pytest.raises(RequestRefused, match=reason):
        content_length(values)


def test_a_good_content_length_is_the_body_size():
    assert content_length([" 42 "]) == 42 and content_length([str(MAX_REQUEST_BYTES)]) == MAX_REQUEST_BYTES


@pytest.mark.parametrize("body, reason", [
    (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests deeper"),
    (b'{"step": 1, "step": 2, "items": []}', "'step' appears twice"),
    (b"\xff\xfe\x00", "not JSON"),
    (b'{"step": 1', "not JSON"),
    (b"1" * 5000, "not JSON"),  # beyond Python's limit on digits of an int
])
def test_a_body_that_is_not_one_plain_json_value_is_refused(body, reason):
    with pytest.raises(RequestRefused, match=reason):
        parse_json_body(body)
