"""Hostile requests to a site's expert service over its real HTTP port: every one is refused with
status 400 and a one-line reason before the expert sees it, and the service stays up (a good
request right after each one is answered). The request contract: `transport.contract`, the HTTP
framing (Content-Length before the body, JSON): `engines.expert_service`.

Requests are written on a raw socket, so the test controls every header and byte, and half-closes
its side after sending: a service that waited for more body than it was sent would see the end of
the stream, not hang the test.

Run: pytest tests/property/test_request_contract.py
"""

from __future__ import annotations

import base64
import json
import socket
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedgrpo.core.packing import MAX_TEXTS_BYTES, compress_texts
from fedgrpo.engines.expert_service import ExpertService
from fedgrpo.transport.contract import (
    MAX_CANDIDATES,
    MAX_ITEMS,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_CANDIDATES,
    MAX_SESSION_CHARS,
    MAX_STEP,
    MAX_TEXT_CHARS,
)
from fedgrpo.types import CalibrationReply, CalibrationRequest, Hello, ScoreReply, ScoreRequest

# A session's first request: one question with its text, its two distinct final answers.
GOOD_SCORE = {"step": 4, "session": "s", "reads": "answers", "refs": [0], "counts": [2], "answers": ["2", "33"],
              "text_at": [0], "question_id": ["q1"], "generator": ["basic_arithmetic"],
              "question": ["Calculate 1 + 1."]}
GOOD_REPLY = {"step": 4, "form": "bits", "values": base64.b64encode(bytes([0b01])).decode()}  # 1.0, 0.0
GOOD_CALIBRATION = {"items": [{"question_id": "a1", "generator": "basic_arithmetic",
                               "question": "Calculate 2 + 2.", "answer": "4"}]}


class Counting:
    """Scores a candidate by the parity of its length and counts the requests it is asked: a
    refused request must never reach it."""

    def __init__(self):
        self.asked = 0

    def hello(self):
        return Hello("client-0", "arithmetic", reads="answers")

    def score(self, request: ScoreRequest) -> ScoreReply:
        self.asked += 1
        return ScoreReply(request.step, tuple(float(len(c) % 2) for i in request.items for c in i.candidates))

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        self.asked += 1
        return CalibrationReply(tuple(1.0 for _ in request.items))


@pytest.fixture(scope="module")
def site():
    expert = Counting()
    service = ExpertService(expert).start()
    yield expert, service.url.rsplit(":", 1)[1]
    service.stop()


def exchange(port: str, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, dict]:
    """Send one raw HTTP request, half-close, read the reply to its end: (status, JSON body)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode("latin-1") + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # refused from its headers, part of the request was never read: the reply came first
    data = b"".join(chunks)
    assert data, "the service closed the connection without a reply"
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def with_length(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]


# --- hostile bodies ----------------------------------------------------------------------------------

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
not_a_text = json_values.filter(lambda v: not isinstance(v, str))
not_a_list = json_values.filter(lambda v: not isinstance(v, list))
not_an_object = json_values.filter(lambda v: not isinstance(v, dict))
bad_steps = st.one_of(st.booleans(), st.floats(), st.text(max_size=4), st.none(), st.lists(st.integers(), max_size=2),
                      st.integers(max_value=-1), st.integers(min_value=MAX_STEP + 1, max_value=MAX_STEP * 4))


def _nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


@st.composite
def hostile_score_bodies(draw) -> bytes:
    """A score request body with at least one fault, of a kind drawn first."""
    fault = draw(st.sampled_from([
        "answers-string", "answers-not-texts", "answers-not-list", "count-zero", "counts-do-not-add-up",
        "text-not-text", "step", "session", "reads", "extra-field", "missing-field", "ref-not-count",
        "text-at-out-of-range", "text-at-not-increasing", "text-columns-differ", "not-an-object", "deep",
        "not-json", "repeated-field", "too-many-candidates", "too-many-items", "too-many-in-request", "long-text",
        "lone-surrogate", "empty-list", "questions-without-items", "texts-not-base64", "texts-not-zlib",
        "texts-not-a-list", "texts-counts-differ", "answers-in-texts-form"]))
    request = json.loads(json.dumps(GOOD_SCORE))
    if fault == "answers-string":  # would be scored character by character
        request["answers"] = draw(st.text(max_size=8))
    elif fault == "answers-not-texts":  # integers and other values among the answers
        request["answers"] = ["2", draw(not_a_text)]
    elif fault == "answers-not-list":
        request["answers"] = draw(not_a_list.filter(lambda v: not isinstance(v, str)))
    elif fault == "count-zero":
        request["counts"], request["answers"] = [0], []
    elif fault == "counts-do-not-add-up":
        request["counts"] = [draw(st.integers(1, 5).filter(lambda n: n != 2))]
    elif fault == "text-not-text":
        request[draw(st.sampled_from(["question_id", "generator", "question"]))] = [draw(not_a_text)]
    elif fault == "step":
        request["step"] = draw(bad_steps)
    elif fault == "session":
        request["session"] = draw(st.one_of(not_a_text, st.just("s" * (MAX_SESSION_CHARS + 1))))
    elif fault == "reads":
        request["reads"] = draw(json_values.filter(lambda v: v not in ("answers", "texts")))
    elif fault == "extra-field":
        request[draw(st.text(max_size=5).filter(lambda k: k not in request))] = draw(json_values)
    elif fault == "missing-field":
        del request[draw(st.sampled_from(sorted(request)))]
    elif fault == "ref-not-count":
        request["refs"] = [draw(st.one_of(st.booleans(), st.floats(), st.integers(max_value=-1), st.text(max_size=2)))]
    elif fault == "text-at-out-of-range":
        request["text_at"] = [draw(st.one_of(st.integers(min_value=1), st.integers(max_value=-1)))]
    elif fault == "text-at-not-increasing":
        request.update(refs=[0, 1], counts=[1, 1], answers=["2", "3"], text_at=[1, 1], question_id=["a", "b"],
                       generator=["g", "g"], question=["x", "y"])
    elif fault == "text-columns-differ":
        request[draw(st.sampled_from(["question_id", "generator", "question"]))] = ["a", "b"]
    elif fault == "not-an-object":
        return json.dumps(draw(not_an_object)).encode()
    elif fault == "deep":  # deeper than the parser's recursion limit, somewhere in the request
        deep = _nested(draw(st.integers(1_000, 100_000)), draw(st.sampled_from(["list", "object"])))
        where = draw(st.sampled_from(["top", "answers", "step"]))
        if where == "top":
            return deep.encode()
        marker = json.dumps(request).replace('["2", "33"]' if where == "answers" else "4", "@", 1)
        return marker.replace("@", deep).encode()
    elif fault == "not-json":
        return draw(st.binary(min_size=0, max_size=40).filter(_not_json))
    elif fault == "repeated-field":
        return b'{"step": 4, "step": 5, "session": "s", "reads": "answers"}'
    elif fault == "too-many-candidates":
        request["counts"], request["answers"] = [MAX_CANDIDATES + 1], ["x"] * (MAX_CANDIDATES + 1)
    elif fault == "too-many-items":
        n = MAX_ITEMS + 1
        request.update(refs=[0] * n, counts=[1] * n, answers=["x"] * n)
    elif fault == "too-many-in-request":
        n = MAX_REQUEST_CANDIDATES // MAX_CANDIDATES + 1
        request.update(refs=[0] * n, counts=[MAX_CANDIDATES] * n, answers=["x"] * (n * MAX_CANDIDATES))
    elif fault == "long-text":
        request["question"] = ["x" * (MAX_TEXT_CHARS + 1)]
    elif fault == "lone-surrogate":  # which JSON's escapes can carry and UTF-8 cannot encode
        request["answers"] = ["2", "\ud800"]
    elif fault == "empty-list":  # an empty column is left out, not sent
        request[draw(st.sampled_from(["refs", "text_at"]))] = []
    elif fault == "questions-without-items":
        for name in ("refs", "counts", "answers"):
            del request[name]
    else:  # the texts form: compressed candidates
        request["reads"] = "texts"
        blob = compress_texts(["2", "33"])
        if fault == "texts-not-base64":
            request["texts"] = draw(st.one_of(st.sampled_from(["!!", "AB==", "QQ="]), not_a_text))
        elif fault == "texts-not-zlib":
            request["texts"] = base64.b64encode(draw(st.binary(min_size=1, max_size=12))).decode()
        elif fault == "texts-not-a-list":
            request["texts"] = base64.b64encode(zlib.compress(json.dumps(draw(not_a_list)).encode())).decode()
        elif fault == "texts-counts-differ":
            request["texts"] = base64.b64encode(compress_texts(["2"] * draw(st.integers(0, 5).filter(lambda n: n != 2)))).decode()
        else:  # answers where the texts form takes compressed texts
            pass
        if fault != "answers-in-texts-form":
            del request["answers"]
        else:
            request["texts"] = base64.b64encode(blob).decode()
    return json.dumps(request).encode()


@st.composite
def hostile_calibration_bodies(draw) -> bytes:
    fault = draw(st.sampled_from(["answer-not-text", "extra-field", "missing-item-field", "items-not-list"]))
    request = json.loads(json.dumps(GOOD_CALIBRATION))
    item = request["items"][0]
    if fault == "answer-not-text":
        item["answer"] = draw(not_a_text)
    elif fault == "extra-field":
        request[draw(st.text(max_size=5).filter(lambda k: k != "items"))] = draw(json_values)
    elif fault == "missing-item-field":
        del item[draw(st.sampled_from(sorted(item)))]
    else:
        request["items"] = draw(not_a_list)
    return json.dumps(request).encode()


def _not_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@st.composite
def hostile_framing(draw) -> tuple[list[tuple[str, str]], bytes]:
    """Headers that break the framing, with a good body or none: no Content-Length (a chunked body),
    one that is not a byte count, two of them, more than the cap (nothing sent after the headers:
    a service that read before checking would wait), more than is sent."""
    body = json.dumps(GOOD_SCORE).encode()
    fault = draw(st.sampled_from(["missing", "chunked", "not-a-count", "two", "too-large", "short"]))
    if fault == "missing":
        return [("Content-Type", "application/json")], body
    if fault == "chunked":
        return [("Transfer-Encoding", "chunked")], f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    if fault == "not-a-count":
        value = draw(header_text.filter(lambda v: not (v.strip().isascii() and v.strip().isdigit())))
        return [("Content-Length", value)], body
    if fault == "two":
        return [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))], body
    if fault == "too-large":
        return [("Content-Length", str(draw(st.integers(MAX_REQUEST_BYTES + 1, 10**15))))], b""
    return [("Content-Length", str(len(body) + draw(st.integers(1, 1000))))], body


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_refused_then_served(site, status: int, reply: dict, asked_before: int) -> None:
    expert, port = site
    # A clear 400 on one line, and the expert never saw the request.
    assert status == 400, reply
    assert set(reply) == {"error"} and reply["error"].startswith("malformed request: ")
    assert "\n" not in reply["error"] and len(reply["error"]) < 300
    assert expert.asked == asked_before
    # The service is still up and a good request is answered as before.
    body = json.dumps(GOOD_SCORE).encode()
    assert exchange(port, "/score", with_length(body), body) == (200, GOOD_REPLY)
    assert expert.asked == asked_before + 1


@FUZZ
@given(body=hostile_score_bodies())
def test_hostile_score_requests_are_refused_and_the_service_stays_up(site, body):
    expert, port = site
    asked = expert.asked
    status, reply = exchange(port, "/score", with_length(body), body)
    _assert_refused_then_served(site, status, reply, asked)


@settings(FUZZ, max_examples=100)
@given(body=hostile_calibration_bodies())
def test_hostile_calibration_requests_are_refused_and_the_service_stays_up(site, body):
    expert, port = site
    asked = expert.asked
    status, reply = exchange(port, "/calibrate", with_length(body), body)
    _assert_refused_then_served(site, status, reply, asked)


@settings(FUZZ, max_examples=100)
@given(framing=hostile_framing())
def test_hostile_framing_is_refused_and_the_service_stays_up(site, framing):
    expert, port = site
    headers, body = framing
    asked = expert.asked
    status, reply = exchange(port, "/score", headers, body)
    _assert_refused_then_served(site, status, reply, asked)


def test_good_requests_are_answered(site):
    _, port = site
    body = json.dumps(GOOD_CALIBRATION).encode()
    assert exchange(port, "/calibrate", with_length(body), body) == (200, {"form": "bits", "values": "AQ=="})
    body = json.dumps({"step": 4, "session": "s", "reads": "answers"}).encode()  # nothing to score is not an error
    assert exchange(port, "/score", with_length(body), body) == (200, {"step": 4, "form": "bits"})
    # The session's question again, by its number alone: the service kept its text.
    body = json.dumps({"step": 5, "session": "s", "reads": "answers", "refs": [0], "counts": [1],
                       "answers": ["7"]}).encode()
    assert exchange(port, "/score", with_length(body), body) == (200, {"step": 5, "form": "bits", "values": "AQ=="})


def test_compressed_texts_that_inflate_past_the_cap_are_refused(site):
    """A small body whose texts inflate a thousandfold (a zlib bomb) is refused from the inflated size,
    and the service stays up."""
    expert, port = site
    bomb = zlib.compress(b'["' + b"a" * (MAX_TEXTS_BYTES + 10) + b'"]', 9)
    body = json.dumps({"step": 1, "session": "s", "reads": "texts", "refs": [0], "counts": [1],
                       "texts": base64.b64encode(bomb).decode()}).encode()
    assert len(body) < MAX_REQUEST_BYTES
    asked = expert.asked
    status, reply = exchange(port, "/score", with_length(body), body)
    assert "inflate to more than" in reply["error"]
    _assert_refused_then_served(site, status, reply, asked)
