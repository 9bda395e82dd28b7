"""Fuzzed replies through the real reply path of every engine: none crashes the server, none is
accepted, each is counted (the reply contract, `transport.contract`).

Paths: the embedded engine (an in-process endpoint returns the fuzzed wire reply: a malformed
packing, or no reply at all), the Flower engine (a node's reply message carries fuzzed records:
Simulation and Deployment share this server side), and a site's expert service (its HTTP reply body
is fuzzed JSON, read by the node's `RemoteExpert` and forwarded by the ClientApp's handler, as in a
Deployment). And the client's own side: an expert's fuzzed float rewards never leave its endpoint.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedgrpo.core.packing import pack_rewards
from fedgrpo.engines.expert_service import RemoteExpert
from fedgrpo.transport.contract import MAX_REPLY_BYTES, ReplyRefused
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.flower_client import handle_score
from fedgrpo.transport.flower_records import HELLO, SCORE, encode_hello_reply
from fedgrpo.transport.flower_transport import FlowerTransport
from fedgrpo.transport.session import ClientEndpoint
from fedgrpo.types import (
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    Hello,
    PackedRewards,
    QuestionText,
    Reads,
    RewardForm,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    WireCalibrationReply,
    WireItem,
    WireScoreReply,
    WireScoreRequest,
)

STEP = 7
REQUEST = ScoreRequest(STEP, (ScoreItem("q1", "basic_arithmetic", "Calculate 1 + 1.", ("2", "3", "4")),
                              ScoreItem("q2", "basic_arithmetic", "Calculate 2 + 2.", ("4", "5"))))
N = REQUEST.num_candidates  # 5: one byte of bits, three of them past the last value
WIRE = WireScoreRequest(STEP, "s", Reads.TEXTS, tuple(
    WireItem(k, QuestionText(i.question_id, i.generator, i.question), i.candidates) for k, i in enumerate(REQUEST.items)))
CALIBRATION = CalibrationRequest(tuple(CalibrationItem(f"a{i}", "basic_arithmetic", f"Calculate {i} + 1.", str(i + 1))
                                       for i in range(4)))

# --- what a reply may hold that the contract refuses ---------------------------------------------

not_a_float = st.one_of(st.integers(), st.booleans(), st.text(max_size=5), st.none(), st.lists(st.floats(), max_size=2))
out_of_range = st.one_of(st.floats(min_value=1.0, exclude_min=True), st.floats(max_value=0.0, exclude_max=True))
allowed = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.just(math.nan))


@st.composite
def bad_packings(draw, n: int = N, allow_missing: bool = True) -> PackedRewards:
    """Packed rewards that are not the one encoding of `n` values (`core.packing`), by a fault drawn first."""
    values = [draw(allowed) for _ in range(n)]
    good = pack_rewards(values)
    fault = draw(st.sampled_from(["length", "stray", "mask-length", "mask-stray", "mask-empty", "masked-value",
                                  "q8-of-bits", "form", "types"] + ([] if allow_missing else ["mask"])))
    form, data, mask = good.form, good.values, good.mask
    if fault == "length":
        data = draw(st.binary(max_size=3 * n).filter(lambda b: len(b) != len(data)))
    elif fault == "stray":  # a bit past the last value
        form, data = RewardForm.BITS, pack_rewards([float(v == 1.0) for v in values]).values
        data = data[:-1] + bytes([data[-1] | 1 << draw(st.integers(n % 8, 7))])
    elif fault == "mask-length":
        mask = draw(st.binary(min_size=1, max_size=4).filter(lambda b: len(b) != (n + 7) // 8))
    elif fault == "mask-stray":
        mask = bytes([(mask[0] if mask else 1) | 1 << draw(st.integers(n % 8, 7))])
    elif fault == "mask-empty":  # present, with no value missing
        mask = bytes((n + 7) // 8)
    elif fault == "masked-value":  # a value where the mask says missing
        form, data, mask = RewardForm.BITS, bytes([1]), bytes([1])
    elif fault == "q8-of-bits":  # 0/1 values as 8-bit levels: they go as bits
        form, data, mask = RewardForm.Q8, bytes(draw(st.sampled_from([0, 255])) for _ in range(n)), b""
    elif fault == "mask":  # a value missing where every one is required (calibration)
        form, data, mask = RewardForm.BITS, bytes([0]), bytes([1])
    elif fault == "form":
        form = draw(st.one_of(st.sampled_from(["floats", "", "Bits", "q16"]), st.integers(), st.none()))
    else:
        data = draw(st.one_of(st.lists(st.integers(0, 255), max_size=2), st.text(max_size=2), st.none()))
    return PackedRewards(form, data, mask)


bad_steps = st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.booleans(), st.none())


@st.composite
def bad_score_replies(draw):
    """Any object but a well-formed wire reply to WIRE at STEP (stale replies are counted apart)."""
    kind = draw(st.sampled_from(["object", "rewards", "step", "floats"]))
    if kind == "object":
        return draw(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.dictionaries(st.text(max_size=3), st.floats()),
                              st.builds(WireCalibrationReply, st.just(pack_rewards([1.0])))))
    if kind == "step":
        return WireScoreReply(draw(bad_steps), pack_rewards([draw(allowed) for _ in range(N)]))
    if kind == "floats":  # the resolved reply, never packed
        return ScoreReply(STEP, tuple(draw(allowed) for _ in range(N)))
    return WireScoreReply(STEP, draw(bad_packings()))


@st.composite
def bad_calibration_replies(draw):
    kind = draw(st.sampled_from(["object", "packing", "q8"]))
    n = len(CALIBRATION.items)
    if kind == "object":
        return draw(st.one_of(st.none(), st.text(max_size=5), st.builds(WireScoreReply, st.just(0), st.just(pack_rewards([1.0]))),
                              st.builds(CalibrationReply, st.just((1.0,) * n))))
    if kind == "q8":  # correctness values are bits
        return WireCalibrationReply(pack_rewards([0.5] + [1.0] * (n - 1)))
    return WireCalibrationReply(draw(bad_packings(n, allow_missing=False)))


@st.composite
def bad_rewards(draw):
    """A resolved reward list with at least one fault: a wrong length, an out-of-range value or a non-float."""
    fault = draw(st.sampled_from(["length", "range", "type"]))
    if fault == "length":
        n = draw(st.integers(0, 3 * N).filter(lambda k: k != N))
        return [draw(allowed) for _ in range(n)]
    values = [draw(allowed) for _ in range(N)]
    values[draw(st.integers(0, N - 1))] = draw(out_of_range if fault == "range" else not_a_float)
    return values


FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the embedded engine ---------------------------------------------------------------------------

class Replies:
    """An in-process endpoint that answers with whatever wire reply the test sets."""

    speaks_wire = True

    def __init__(self):
        self.score_reply = self.calibration_reply = None

    def hello(self):
        return Hello("fuzzed", "arithmetic")

    def score(self, request):
        return self.score_reply

    def calibrate(self, request):
        return self.calibration_reply


@pytest.fixture(scope="module")
def embedded():
    expert = Replies()
    transport = EmbeddedTransport({"fuzzed": expert}, timeout_s=5)
    yield expert, transport
    transport.close()


@FUZZ
@given(reply=bad_score_replies())
def test_embedded_score_replies(embedded, reply):
    expert, transport = embedded
    expert.score_reply = reply
    before = transport.ledger.refused.get("fuzzed", 0)
    results = transport.score_round(STEP, {"fuzzed": REQUEST})
    assert results.replies == {}
    assert [f.expert_id for f in results.failures] == ["fuzzed"]
    assert transport.ledger.refused["fuzzed"] == before + 1


@FUZZ
@given(reply=bad_calibration_replies())
def test_embedded_calibration_replies(embedded, reply):
    expert, transport = embedded
    expert.calibration_reply = reply
    before = transport.ledger.refused.get("fuzzed", 0)
    replies, failures = transport.calibrate_round(CALIBRATION)
    assert replies == {} and set(failures) == {"fuzzed"}
    assert transport.ledger.refused["fuzzed"] == before + 1


def test_a_well_formed_reply_passes_and_nan_means_no_reward(embedded):
    expert, transport = embedded
    expert.score_reply = WireScoreReply(STEP, pack_rewards((1.0, 0.0, math.nan, 0.4, 1.0)))
    rewards = transport.score_round(STEP, {"fuzzed": REQUEST}).replies["fuzzed"].rewards
    assert rewards[:2] == (1.0, 0.0) and math.isnan(rewards[2]) and rewards[3:] == (0.4, 1.0)


class Floats:
    """A client's expert that scores with whatever resolved reply the test sets."""

    reply: object = None

    def hello(self):
        return Hello("fuzzed", "arithmetic")

    def score(self, request):
        return self.reply


@FUZZ
@given(rewards=bad_rewards())
def test_a_clients_endpoint_sends_no_reward_outside_the_contract(rewards):
    expert = Floats()
    expert.reply = ScoreReply(STEP, tuple(rewards))
    with pytest.raises(ReplyRefused):
        ClientEndpoint(expert).score(WIRE)


# --- the Flower engine: a node's reply records are fuzzed ----------------------------------------------

class RawGrid:
    """A grid whose one node answers hello properly and every score request with `content`."""

    def __init__(self):
        self.content = None
        self.respond = None  # message -> reply, in place of `content` (a real ClientApp handler)
        self.ready = {}

    def get_node_ids(self):
        return [5]

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            if message.metadata.message_type == HELLO:
                content = encode_hello_reply(Hello("fuzzed", "arithmetic"))
            elif self.respond is not None:
                self.ready[mid] = self.respond(message)
                ids.append(mid)
                continue
            else:
                assert message.metadata.message_type == SCORE
                content = self.content
            self.ready[mid] = Message(content, reply_to=message)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        return [self.ready.pop(i) for i in list(message_ids) if i in self.ready]


metric_values = st.one_of(st.integers(-10, 10), st.floats(), st.lists(st.floats(), max_size=7),
                          st.lists(st.integers(-3, 3), max_size=7), st.binary(min_size=1, max_size=4))


def _fields(packed: PackedRewards, step: object = STEP) -> dict:
    fields = {"step": step, "form": packed.form, "values": packed.values, "mask": packed.mask}
    return {k: v for k, v in fields.items() if not isinstance(v, bytes) or v}


@st.composite
def bad_score_contents(draw):
    """A reply RecordDict that is not exactly {"rewards": ConfigRecord(step=STEP, form, values[, mask])},
    the one packing of N allowed rewards."""
    kind = draw(st.sampled_from(["extra-record", "renamed", "metric-record", "extra-field", "missing-field",
                                 "values", "step", "empty-bytes"]))
    good = _fields(pack_rewards([draw(allowed) for _ in range(N)]))
    good["form"] = good["form"].value
    if kind == "extra-record":
        return RecordDict({"rewards": ConfigRecord(good), draw(st.sampled_from(["extra", "log", "x"])): MetricRecord({"a": 1.0})})
    if kind == "renamed":
        return RecordDict({draw(st.sampled_from(["reward", "scores", "Rewards"])): ConfigRecord(good)})
    if kind == "metric-record":  # the form of the floats of old, in a MetricRecord
        return RecordDict({"rewards": MetricRecord({"step": STEP, "rewards": [draw(allowed) for _ in range(N)]})})
    if kind == "extra-field":
        return RecordDict({"rewards": ConfigRecord({**good, draw(st.sampled_from(["note", "debug", "z"])): draw(metric_values)})})
    if kind == "missing-field":
        missing = draw(st.sampled_from(["step", "form", "values"]))
        return RecordDict({"rewards": ConfigRecord({k: v for k, v in good.items() if k != missing})})
    if kind == "step":
        return RecordDict({"rewards": ConfigRecord({**good, "step": draw(st.one_of(st.floats(allow_nan=False), st.text(max_size=3)))})})
    if kind == "empty-bytes":  # an empty byte string is left out, not sent
        return RecordDict({"rewards": ConfigRecord({**good, "mask": b""})})
    bad = draw(bad_packings().filter(lambda p: isinstance(p.values, bytes) and isinstance(p.form, (str, int))))
    fields = _fields(bad)
    fields["form"] = bad.form.value if isinstance(bad.form, RewardForm) else bad.form
    if fields["form"] == "":
        fields["form"] = "none"
    return RecordDict({"rewards": ConfigRecord(fields)})


@pytest.fixture(scope="module")
def flower(request):
    from flwr.supercore.task_identity import TaskIdentity

    saved = {name: getattr(TaskIdentity, name) for name in ("_task_id", "_run_id", "_node_id")}
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        setattr(TaskIdentity, name, value)
    grid = RawGrid()
    yield grid, FlowerTransport(grid, ["fuzzed"], timeout_s=5.0, node_wait_s=1.0)
    for name, value in saved.items():
        setattr(TaskIdentity, name, value)


@FUZZ
@given(content=bad_score_contents())
def test_flower_score_replies(flower, content):
    grid, transport = flower
    grid.content = content
    before = transport.ledger.refused.get("fuzzed", 0)
    results = transport.score_round(STEP, {"fuzzed": REQUEST})
    assert results.replies == {} and [f.expert_id for f in results.failures] == ["fuzzed"]
    assert "refused score reply" in results.failures[0].reason
    assert transport.ledger.refused["fuzzed"] == before + 1


def test_flower_oversized_reply_is_refused_before_decoding(flower):
    grid, transport = flower
    grid.content = RecordDict({"rewards": ConfigRecord({"step": STEP, "form": "q8", "values": b"\x80" * (MAX_REPLY_BYTES + 10)})})
    results = transport.score_round(STEP, {"fuzzed": REQUEST})
    assert results.replies == {} and "more than the" in results.failures[0].reason


# --- a site's expert service: its JSON body is fuzzed ---------------------------------------------

class Body:
    text = b"{}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(Body.text)))
        self.end_headers()
        self.wfile.write(Body.text)


@pytest.fixture(scope="module")
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield RemoteExpert(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=5)
    server.shutdown()


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=8)


@st.composite
def bad_json_bodies(draw):
    kind = draw(st.sampled_from(["anything", "extra-field", "packing", "step", "not-json", "not-base64", "repeated"]))
    good = json.loads(_body(pack_rewards([draw(st.floats(0.0, 1.0)) for _ in range(N)])))
    if kind == "anything":
        return json.dumps(draw(json_values.filter(lambda v: not (isinstance(v, dict) and set(v) >= {"step", "form"})))).encode()
    if kind == "extra-field":
        return json.dumps({**good, draw(st.text(min_size=1, max_size=4).filter(lambda k: k not in good)): draw(json_values)}).encode()
    if kind == "step":
        return json.dumps({**good, "step": draw(st.one_of(st.floats(allow_nan=False), st.text(max_size=3), st.booleans()))}).encode()
    if kind == "not-json":
        return draw(st.binary(max_size=20).filter(lambda b: not _is_json(b)))
    if kind == "not-base64":  # not base64, or not its one canonical text
        return json.dumps({**good, "values": draw(st.sampled_from(["!!", "AA", "AB==", "QQ=", 3, None]))}).encode()
    if kind == "repeated":
        return b'{"step": 7, "step": 7, "form": "bits", "values": "AA=="}'
    bad = draw(bad_packings().filter(lambda p: isinstance(p.values, bytes) and isinstance(p.form, RewardForm)))
    return _body(bad)


def _body(packed: PackedRewards) -> bytes:
    fields = {"step": STEP, "form": packed.form.value,
              **{k: base64.b64encode(v).decode() for k, v in (("values", packed.values), ("mask", packed.mask)) if v}}
    return json.dumps(fields).encode()


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@FUZZ
@given(body=bad_json_bodies())
def test_expert_service_replies(flower, service, body):
    """Deployment: the node's ClientApp handler asks the site's service (`RemoteExpert`) and forwards
    its reply; a fuzzed body becomes the node's error reply, and the server records the failure."""
    grid, transport = flower
    Body.text = body
    grid.respond = lambda message: handle_score(message, service)
    try:
        results = transport.score_round(STEP, {"fuzzed": REQUEST})
    finally:
        grid.respond = None
    assert results.replies == {} and [f.expert_id for f in results.failures] == ["fuzzed"]
    assert results.failures[0].reason.startswith("node error")


def test_expert_service_oversized_body_is_refused(service):
    Body.text = json.dumps({"step": STEP, "form": "q8", "values": "gA==" * (MAX_REPLY_BYTES // 4)}).encode()
    with pytest.raises(ValueError, match="more than the"):
        service.score(WIRE)
