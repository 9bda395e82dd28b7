"""The Flower engine without a Flower runtime: records round-trip, ClientApp handlers turn faults into
error replies whose code carries the failure's kind, and FlowerTransport over a fake grid (hello
mapping, deadlines, stale replies dropped and counted, typed failures, the same payload bytes as the
embedded engine).

Run: pytest tests/unit/test_flower_transport.py
"""

from __future__ import annotations

import math
import uuid

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedgrpo.core.packing import pack_rewards
from fedgrpo.errors import FedGRPOError
from fedgrpo.privacy.client import PrivacyBudgetSpent
from fedgrpo.transport.contract import RequestRefused
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.flower_client import handle_calibrate, handle_hello, handle_score
from fedgrpo.transport.flower_records import (
    CALIBRATE,
    HELLO,
    SCORE,
    decode_calibration_reply,
    decode_calibration_request,
    decode_score_reply,
    decode_score_request,
    encode_calibration_reply,
    encode_calibration_request,
    encode_score_reply,
    encode_score_request,
    failure_code,
    failure_kind_of_code,
)
from fedgrpo.transport.flower_transport import FlowerTransport
from fedgrpo.transport.session import wire_endpoint
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


class FakeExpert:
    def __init__(self, behaviour="ok"):
        self.behaviour = behaviour

    def hello(self) -> Hello:
        return Hello("expert", "arithmetic")

    def score(self, request: ScoreRequest) -> ScoreReply:
        n = request.num_candidates
        if self.behaviour == "raise":
            raise RuntimeError("model crashed")
        if self.behaviour == "budget":
            raise PrivacyBudgetSpent("privacy budget spent (12 values released)")
        if self.behaviour == "short":
            return ScoreReply(request.step, (1.0,) * (n - 1))
        return ScoreReply(request.step, tuple(float(i % 2) for i in range(n)))

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        return CalibrationReply((1.0,) * len(request.items))


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower's runtimes set the process's task identity before any Message is built; do the same."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _score_request(step=3) -> ScoreRequest:
    return ScoreRequest(step, (
        ScoreItem("q1", "basic_arithmetic", "Calculate 1 + 1.", ("2</answer>", "3</answer>")),
        ScoreItem("q2", "spell_backward", "Spell 'cat' backward.", ("tac</answer>", "", "tca", "tac")),
    ))


def _wire_request(step=3, reads=Reads.TEXTS) -> WireScoreRequest:
    """The score request as it travels, every question's text with it (a session's first request)."""
    items = _score_request(step).items
    if reads is Reads.ANSWERS:
        items = tuple(ScoreItem(i.question_id, i.generator, i.question, ("2", "")) for i in items)
    return WireScoreRequest(step, "session-1", reads, tuple(
        WireItem(k, QuestionText(i.question_id, i.generator, i.question), i.candidates) for k, i in enumerate(items)))


def _calibration_request() -> CalibrationRequest:
    return CalibrationRequest((CalibrationItem("a1", "basic_arithmetic", "Calculate 2 + 2.", "4"),
                               CalibrationItem("a2", "spell_backward", "Spell 'ab' backward.", "ba")))


# --- records ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reads", list(Reads))
def test_every_message_survives_encoding(reads):
    assert decode_score_request(encode_score_request(_wire_request(reads=reads))) == _wire_request(reads=reads)
    later = WireScoreRequest(4, "session-1", reads, tuple(WireItem(i.ref, None, i.candidates)
                                                           for i in _wire_request(reads=reads).items))
    assert decode_score_request(encode_score_request(later)) == later  # no text: the client has it
    assert decode_calibration_request(encode_calibration_request(_calibration_request())) == _calibration_request()
    for values in ((1.0, 0.0, 0.5, 1.0, 0.0, 1.0), (1.0, float("nan"), 0.0), (0.0,) * 9):
        reply = WireScoreReply(3, pack_rewards(values))
        assert decode_score_reply(encode_score_reply(reply)) == reply
    bits = WireCalibrationReply(pack_rewards((1.0, 0.0)))
    assert decode_calibration_reply(encode_calibration_reply(bits)) == bits


def test_a_score_reply_is_one_config_record_of_its_step_and_packed_rewards():
    content = encode_score_reply(WireScoreReply(7, pack_rewards((1.0, 0.0, 1.0))))
    # Nothing but numbers leaves a client: one record, the step it answers and one bit per value.
    assert list(content) == ["rewards"] and isinstance(content["rewards"], ConfigRecord)
    assert dict(content["rewards"]) == {"step": 7, "form": "bits", "values": bytes([0b101])}


def test_a_request_whose_candidate_counts_do_not_add_up_is_refused():
    content = encode_score_request(_wire_request())
    content["score"]["counts"] = [2, 3]  # the second item claims one candidate too few
    with pytest.raises(RequestRefused, match="the counts add up to 5"):
        decode_score_request(content)


# --- ClientApp handlers ---------------------------------------------------------------------------

class FakeSite(FakeExpert):
    def __init__(self, expert_id="client-0", domain="arithmetic", **kw):
        super().__init__(**kw)
        self.expert_id, self.domain = expert_id, domain

    def hello(self):
        return Hello(self.expert_id, self.domain)


def _incoming(kind: str, content: RecordDict, node: int = 1) -> Message:
    message = Message(content, dst_node_id=node, message_type=kind, group_id="g")
    message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return message


def test_handlers_answer_hello_calibrate_and_score():
    site = wire_endpoint(FakeSite())
    hello = handle_hello(_incoming(HELLO, RecordDict()), site)
    assert dict(hello.content["hello"]) == {"expert-id": "client-0", "domain": "arithmetic", "privacy": "{}",
                                            "reads": "texts"}
    bits = handle_calibrate(_incoming(CALIBRATE, encode_calibration_request(_calibration_request())), site)
    assert decode_calibration_reply(bits.content) == WireCalibrationReply(pack_rewards((1.0, 1.0)))
    scored = handle_score(_incoming(SCORE, encode_score_request(_wire_request(9))), site)
    assert decode_score_reply(scored.content) == WireScoreReply(9, pack_rewards((0.0, 1.0, 0.0, 1.0, 0.0, 1.0)))


def test_a_client_without_a_questions_text_says_so_typed():
    """A node whose endpoint never saw the session's texts (another worker, a restart) answers with an
    error reply of kind NEEDS_TEXT, before its expert works; the server then resends the texts."""
    fresh = wire_endpoint(FakeSite())
    later = WireScoreRequest(9, "session-1", Reads.TEXTS, tuple(WireItem(i.ref, None, i.candidates)
                                                                 for i in _wire_request(9).items))
    reply = handle_score(_incoming(SCORE, encode_score_request(later)), fresh)
    assert reply.has_error() and failure_kind_of_code(reply.error.code) is FailureKind.NEEDS_TEXT
    assert "2 question(s) of session session-1 unknown here" in reply.error.reason


def test_a_raising_expert_gives_an_error_reply_not_an_exception():
    reply = handle_score(_incoming(SCORE, encode_score_request(_wire_request())),
                         wire_endpoint(FakeSite(behaviour="raise")))
    assert reply.has_error() and "model crashed" in reply.error.reason
    assert failure_kind_of_code(reply.error.code) is FailureKind.ERROR


def test_every_failure_kind_survives_its_error_code_and_flowers_own_codes_read_as_error():
    from flwr.common.constant import ErrorCode

    assert all(failure_kind_of_code(failure_code(kind)) is kind for kind in FailureKind)
    flowers = [v for k, v in vars(ErrorCode).items() if k.isupper()]  # a node gone, a crashed ClientApp...
    assert flowers and all(failure_kind_of_code(code) is FailureKind.ERROR for code in flowers)


def test_the_client_app_routes_query_types_to_the_handlers(monkeypatch):
    from fedgrpo import apps
    from fedgrpo.engines import flower_app

    monkeypatch.setattr(flower_app, "site_expert", lambda context, config=None: FakeSite("client-4", "spelling"))
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    reply = apps.client_app(_incoming(HELLO, RecordDict()), context)
    assert dict(reply.content["hello"]) == {"expert-id": "client-4", "domain": "spelling", "privacy": "{}",
                                            "reads": "texts"}


def test_a_node_without_an_expert_identity_gets_an_error_reply():
    from fedgrpo import apps

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    reply = apps.client_app(_incoming(HELLO, RecordDict()), context)
    assert reply.has_error() and "node_config names no expert" in reply.error.reason


# --- FlowerTransport over a fake grid -----------------------------------------------------------------

class FakeGrid:
    """Answers each pushed message with the ClientApp handlers of its node. A node in `held` keeps
    its replies back until `release()`: a reply that arrives after its round's deadline."""

    HANDLERS = {HELLO: handle_hello, CALIBRATE: handle_calibrate, SCORE: handle_score}

    def __init__(self, sites: dict[int, FakeSite]):
        self.sites = {node: wire_endpoint(site) for node, site in sites.items()}  # each keeps its texts
        self.ready: dict[str, Message] = {}
        self.held: set[int] = set()
        self.backlog: dict[str, Message] = {}
        self.pushed: list[Message] = []

    def get_node_ids(self):
        return list(self.sites)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node = message.metadata.dst_node_id
            reply = self.HANDLERS[message.metadata.message_type](message, self.sites[node])
            (self.backlog if node in self.held else self.ready)[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
            self.pushed.append(message)
        return ids

    def pull_messages(self, message_ids):
        return [self.ready.pop(i) for i in list(message_ids) if i in self.ready]

    def release(self):
        self.held.clear()
        self.ready.update(self.backlog)
        self.backlog.clear()


def _transport(grid, ids=("client-0", "client-1"), **kw):
    return FlowerTransport(grid, ids, timeout_s=kw.pop("timeout_s", 5.0), node_wait_s=kw.pop("node_wait_s", 1.0), **kw)


def test_hello_maps_expert_ids_to_nodes_in_the_callers_order():
    grid = FakeGrid({901: FakeSite("client-1", "spelling"), 17: FakeSite("client-0", "arithmetic")})
    transport = _transport(grid)
    assert transport.expert_ids == ("client-0", "client-1")
    assert transport.expert_domains == {"client-0": "arithmetic", "client-1": "spelling"}
    transport.score_round(0, {"client-1": _score_request(0)})
    # The request for client-1 went to the node that said it is client-1.
    assert grid.pushed[-1].metadata.dst_node_id == 901


def test_a_missing_expert_is_a_one_line_error_naming_it():
    grid = FakeGrid({1: FakeSite("client-0")})
    with pytest.raises(FedGRPOError, match="client-1 within 0.3 s"):
        _transport(grid, node_wait_s=0.3)


def test_two_nodes_claiming_one_expert_are_refused():
    grid = FakeGrid({1: FakeSite("client-0"), 2: FakeSite("client-0")})
    with pytest.raises(FedGRPOError, match="two SuperNodes serve expert 'client-0'"):
        _transport(grid, ids=("client-0",))


def test_the_same_traffic_costs_the_same_payload_bytes_as_on_the_embedded_engine():
    sites = {"client-0": FakeSite("client-0"), "client-1": FakeSite("client-1")}
    flower = _transport(FakeGrid({10: sites["client-0"], 11: sites["client-1"]}))
    embedded = EmbeddedTransport(sites)
    for transport in (flower, embedded):
        transport.calibrate_round(_calibration_request())
        for step in (4, 5):  # the second time without the questions' texts
            results = transport.score_round(step, {"client-0": _score_request(step), "client-1": _score_request(step)})
            assert set(results.replies) == {"client-0", "client-1"} and not results.failures
    # Payload bytes agree message by message; wire bytes are each engine's own serialization.
    assert [r[:5] for r in flower.ledger.records] == [r[:5] for r in embedded.ledger.records]
    assert all(r[5] for r in flower.ledger.records + embedded.ledger.records)


def test_errors_and_wrong_shapes_are_failures_never_zeros():
    grid = FakeGrid({1: FakeSite("client-0", behaviour="raise"), 2: FakeSite("client-1", behaviour="short")})
    results = _transport(grid).score_round(2, {"client-0": _score_request(2), "client-1": _score_request(2)})
    assert results.replies == {}
    reasons = {f.expert_id: f.reason for f in results.failures}
    assert "model crashed" in reasons["client-0"]
    # The node's own side of the reply contract stopped the short reply before it left.
    assert reasons["client-1"] == "node error: ReplyRefused: 5 rewards for 6 candidates"
    assert {f.expert_id: f.kind for f in results.failures} == {"client-0": FailureKind.ERROR,
                                                               "client-1": FailureKind.REFUSED}


def test_a_spent_privacy_budget_reaches_the_server_typed():
    grid = FakeGrid({1: FakeSite("client-0", behaviour="budget"), 2: FakeSite("client-1")})
    results = _transport(grid).score_round(2, {"client-0": _score_request(2), "client-1": _score_request(2)})
    [failure] = results.failures
    # The kind crossed the trip in the error code; the reason still tells people why.
    assert failure.kind is FailureKind.BUDGET_SPENT
    assert failure.reason == "node error: PrivacyBudgetSpent: privacy budget spent (12 values released)"


def test_a_spent_budget_behind_a_sites_expert_service_reaches_the_server_typed():
    """Deployment: the node's ClientApp forwards to the site's expert service (`RemoteExpert`), whose
    expert stopped at its budget; the kind crosses both hops (HTTP reply, then the error code)."""
    from fedgrpo.engines.expert_service import ExpertService, RemoteExpert

    service = ExpertService(FakeSite("client-0", behaviour="budget")).start()
    try:
        grid = FakeGrid({1: RemoteExpert(service.url, timeout_s=5)})
        results = _transport(grid, ids=("client-0",)).score_round(2, {"client-0": _score_request(2)})
    finally:
        service.stop()
    [failure] = results.failures
    assert failure.kind is FailureKind.BUDGET_SPENT and "privacy budget spent (12 values released)" in failure.reason


def test_a_late_reply_times_out_then_is_dropped_and_counted_in_the_next_round():
    grid = FakeGrid({1: FakeSite("client-0"), 2: FakeSite("client-1")})
    transport = _transport(grid, timeout_s=0.05)
    grid.held.add(2)
    first = transport.score_round(0, {"client-0": _score_request(0), "client-1": _score_request(0)})
    assert set(first.replies) == {"client-0"}
    assert [(f.expert_id, f.reason, f.kind) for f in first.failures] == [
        ("client-1", "timed out after 0.05 s", FailureKind.TIMED_OUT)]
    grid.release()  # step 0's reply from client-1 now arrives, during step 1
    second = transport.score_round(1, {"client-1": _score_request(1)})
    assert second.replies["client-1"].step == 1 and not second.failures
    assert transport.ledger.stale_replies == 1
    # The late reply was never counted as traffic of either step: one reply, its step and 6 bits.
    assert [r[:5] for r in transport.ledger.records if r[2] == "client-1" and r[3] == "up"] == [
        ("score", 1, "client-1", "up", 8 + len("bits") + 1)]


def test_an_infinite_reward_is_refused_not_made_missing():
    class Inf(FakeSite):
        def score(self, request):
            return ScoreReply(request.step, (math.inf,) + (1.0,) * (request.num_candidates - 1))

    results = _transport(FakeGrid({1: Inf("client-0")}), ids=("client-0",)).score_round(1, {"client-0": _score_request(1)})
    assert results.replies == {}
    assert "reward inf outside [0, 1]" in results.failures[0].reason
    assert results.failures[0].kind is FailureKind.REFUSED


def test_a_node_whose_hello_fails_is_asked_again_until_it_answers():
    class SlowStart(FakeSite):
        """An expert service that is still loading: its first hello fails."""

        calls = 0

        def hello(self):
            SlowStart.calls += 1
            if SlowStart.calls == 1:
                raise ConnectionError("expert service unreachable")
            return super().hello()

    transport = _transport(FakeGrid({1: SlowStart("client-0")}), ids=("client-0",), node_wait_s=5.0)
    assert transport.expert_ids == ("client-0",) and SlowStart.calls == 2


def test_a_hello_that_keeps_failing_is_named_in_the_error():
    class Broken(FakeSite):
        def hello(self):
            raise ConnectionError("expert service unreachable")

    with pytest.raises(FedGRPOError, match="a node answered: ConnectionError: expert service unreachable"):
        _transport(FakeGrid({1: Broken("client-0")}), ids=("client-0",), node_wait_s=0.5)
