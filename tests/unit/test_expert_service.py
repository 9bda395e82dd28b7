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
from fedgrpo.types import (
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    FailureKind,
    Hello,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
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
    assert client.calibrate(calibration) == CalibrationReply((1.0, 0.0))
    request = ScoreRequest(5, (ScoreItem("q", "spell_backward", "Spell 'ab' backward.", ("ba", "b", "é")),))
    assert client.score(request) == ScoreReply(5, (0.0, 1.0, 1.0))


def test_a_scorer_fault_reaches_the_caller_as_one_line():
    faulty = ExpertService(Expert("client-0", "arithmetic", fail=True)).start()
    try:
        with pytest.raises(ExpertServiceError, match="RuntimeError: out of memory"):
            RemoteExpert(faulty.url, timeout_s=5).score(ScoreRequest(0, (ScoreItem("q", "g", "t", ("x",)),)))
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
            remote.score(ScoreRequest(0, (ScoreItem("q", "g", "t", ("x",)),)))
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
            RemoteExpert(slow.url, timeout_s=0.2).score(ScoreRequest(0, (ScoreItem("q", "g", "t", ("x",)),)))
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
    body = json.dumps({"step": 1, "items": [{"question_id": "q", "generator": "g", "question": "t",
                                             "candidates": "abc"}]}).encode()
    status, reply = _post(service.url, "/score", body, {"Content-Length": str(len(body))})
    assert status == 400 and reply == {"error": "malformed request: items[0].candidates is a string, not a list of texts"}


def test_a_body_too_large_is_refused_from_its_declared_length_without_being_sent(service):
    # Only the headers are sent: had the service waited for the body, this would time out.
    status, reply = _post(service.url, "/score", b"", {"Content-Length": str(10**12)})
    assert status == 400 and "more than the" in reply["error"]


def test_the_client_refuses_to_send_what_the_service_would_refuse(service):
    huge = ScoreRequest(0, tuple(ScoreItem(f"q{i}", "g", "t", ("x" * MAX_TEXT_CHARS,)) for i in range(20)))
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
