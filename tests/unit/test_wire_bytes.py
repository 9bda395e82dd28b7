"""Every message counted twice, for every method and engine: the payload model and its serialized size
as it travels. The recorded wire bytes equal the sizes of the serialized messages (Flower's own
serialization, the expert service's JSON bodies); a ledger file written before the wire column still
reads; every method's byte totals are the sums of its messages' recorded wire sizes.

`message_bytes` is measured with Flower's public `deflate` and `children` of its message objects; the
guard test below holds it to the objects Flower 1.42's push sends (`get_all_nested_objects`, internal):
if a newer Flower sends a message differently, it fails here.

Run: pytest tests/unit/test_wire_bytes.py
"""

from __future__ import annotations

import inspect
import json
import uuid
from typing import ClassVar

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedgrpo.bench.methods.base import byte_totals
from fedgrpo.bench.methods.dpsda import pe_body_bytes
from fedgrpo.bench.methods.fedgrpo import ledger_messages
from fedgrpo.bench.methods.fedpetuning import fedavg_messages
from fedgrpo.config import load_config
from fedgrpo.core.packing import pack_rewards
from fedgrpo.data.tasks import Question
from fedgrpo.engines.fedavg import Checkpoints, run_fedavg_embedded
from fedgrpo.transport.base import LedgerFile, TrafficLedger
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.flower_client import handle_calibrate, handle_hello, handle_score
from fedgrpo.transport.flower_records import (
    CALIBRATE,
    HELLO,
    SCORE,
    encode_score_reply,
    encode_score_request,
    message_bytes,
)
from fedgrpo.transport.flower_transport import FlowerTransport
from fedgrpo.transport.json_body import body
from fedgrpo.transport.session import wire_endpoint
from fedgrpo.types import (
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
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


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower's runtimes set the process's task identity before any Message is built; do the same."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _messages() -> list[Message]:
    request = WireScoreRequest(3, "0123456789abcdef", Reads.ANSWERS, (
        WireItem(0, QuestionText("q1", "basic_arithmetic", "Calculate 1 + 1."), ("2", "")),))
    texts = WireScoreRequest(3, "0123456789abcdef", Reads.TEXTS, (WireItem(5, None, ("2</answer>", "x" * 300)),))
    arrays = ArrayRecord({"w": Array(np.arange(300_000, dtype=np.float32))})  # several chunks
    return [Message(encode_score_request(request), dst_node_id=7, message_type=SCORE, group_id="3"),
            Message(encode_score_request(texts), dst_node_id=7, message_type=SCORE, group_id="3"),
            Message(encode_score_reply(WireScoreReply(3, pack_rewards((1.0, float("nan"))))), dst_node_id=7,
                    message_type=SCORE),
            Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}), dst_node_id=7,
                    message_type="train")]


def test_message_bytes_are_the_objects_flower_pushes():
    """Guard: Flower 1.42 pushes a message as the serialized contents of `get_all_nested_objects`
    (the message, its RecordDict, each record, each array chunk); `message_bytes` counts the same
    bytes through public methods. A change to either fails this test."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.superlink.grid import http_grid

    for message in _messages():
        flowers = sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
        assert message_bytes(message) == flowers
    pushed = inspect.getsource(http_grid.HttpGrid._try_push_messages)
    assert "get_all_nested_objects(msg)" in pushed and "push_objects(" in pushed
    # The payload Flower counts is smaller: no metadata, no object headers.
    arrays = _messages()[-1]
    assert message_bytes(arrays) > sum(record.count_bytes() for record in arrays.content.values())


class Site:
    def __init__(self, expert_id: str, reads: Reads = Reads.ANSWERS):
        self.expert_id, self.reads = expert_id, reads

    def hello(self) -> Hello:
        return Hello(self.expert_id, "arithmetic", reads=self.reads)

    def score(self, request: ScoreRequest) -> ScoreReply:
        return ScoreReply(request.step, tuple(float(k % 2) for k in range(request.num_candidates)))

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        return CalibrationReply((1.0,) * len(request.items))


class RecordingGrid:
    """Answers each pushed message with the ClientApp handlers of its node, and keeps what went each way."""

    HANDLERS: ClassVar = {HELLO: handle_hello, CALIBRATE: handle_calibrate, SCORE: handle_score}

    def __init__(self, sites):
        self.sites = {node: wire_endpoint(site) for node, site in sites.items()}
        self.ready, self.pushed, self.pulled = {}, [], []

    def get_node_ids(self):
        return list(self.sites)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            node = message.metadata.dst_node_id
            self.ready[mid] = self.HANDLERS[message.metadata.message_type](message, self.sites[node])
            self.pushed.append(message)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        replies = [self.ready.pop(i) for i in list(message_ids) if i in self.ready]
        self.pulled += replies
        return replies


def test_the_flower_ledger_records_each_message_as_flower_serializes_it():
    grid = RecordingGrid({1: Site("client-0"), 2: Site("client-1", Reads.TEXTS)})
    transport = FlowerTransport(grid, ("client-0", "client-1"), timeout_s=5.0, node_wait_s=1.0, style=None)
    transport.calibrate_round(CalibrationRequest((CalibrationItem("a1", "basic_arithmetic", "2 + 2?", "4"),)))
    for step in (1, 2):
        request = ScoreRequest(step, (ScoreItem("q", "basic_arithmetic", "1 + 1?", ("2</answer>", "3</answer>")),))
        assert transport.score_round(step, {"client-0": request, "client-1": request}).replies
    sent = [m for m in grid.pushed if m.metadata.message_type != HELLO]
    replied = [m for m in grid.pulled if m.metadata.message_type != HELLO]
    records = transport.ledger.records
    assert [r[5] for r in records if r[3] == "down"] == [message_bytes(m) for m in sent]
    assert sorted(r[5] for r in records if r[3] == "up") == sorted(message_bytes(m) for m in replied)


def test_a_ledger_file_written_before_the_wire_column_still_reads(tmp_path):
    path = tmp_path / "traffic.jsonl"
    path.write_text('["calibrate", -1, "client-0", "down", 120]\n["score", 0, "client-0", "up", 24]\n')
    ledger = TrafficLedger()
    file = LedgerFile(ledger, path)
    assert ledger.records == [("calibrate", -1, "client-0", "down", 120, None), ("score", 0, "client-0", "up", 24, None)]
    assert ledger.wire_totals() == {"unrecorded": 2}
    ledger.record("score", 1, "client-0", "up", WireScoreReply(1, pack_rewards((1.0,))), 40)
    file.flush()
    assert json.loads(path.read_text().splitlines()[-1]) == ["score", 1, "client-0", "up", 8 + 4 + 1, 40]
    assert [m[5] for m in ledger_messages(path)] == [None, None, 40]
    assert byte_totals(ledger_messages(path), 5) == {"down": 0, "up": 40, "unrecorded": 2, "total": 40}


def _fedgrpo_messages(tmp_path) -> list[list]:
    transport = EmbeddedTransport({"client-0": Site("client-0"), "client-1": Site("client-1", Reads.TEXTS)})
    file = LedgerFile(transport.ledger, tmp_path / "traffic.jsonl")
    transport.calibrate_round(CalibrationRequest((CalibrationItem("a1", "basic_arithmetic", "2 + 2?", "4"),)))
    request = ScoreRequest(0, (ScoreItem("q", "basic_arithmetic", "1 + 1?", ("2</answer>", "3</answer>")),))
    transport.score_round(0, {"client-0": request, "client-1": request})
    file.flush()
    return ledger_messages(tmp_path / "traffic.jsonl")


def _fedpetuning_messages(tmp_path) -> list[list]:
    def update(arrays, r, c):
        return {k: v + 1 for k, v in arrays.items()}, 1, {"loss": 0.5}

    _, log = run_fedavg_embedded({"w": np.zeros(4, np.float32)}, 2, 2, update, Checkpoints(tmp_path / "fedavg"))
    return fedavg_messages(log)


def _dpsda_messages() -> list[list]:
    from fedgrpo.baselines.dpsda import FoundationAPI, private_evolution
    from fedgrpo.core.comm import payload_bytes

    config = load_config(overrides={"dpsda_rounds": 2, "dpsda_candidates": 6, "dpsda_synthetic_size": 3})
    items = [Question(f"f{i}", "arithmetic", "basic_arithmetic", f"Calculate {i} + {i}.", str(2 * i)) for i in range(12)]
    private = [Question(f"p{i}", "arithmetic", "basic_arithmetic", f"Calculate {i} + 1.", str(i + 1)) for i in range(5)]
    run = private_evolution(config, "client-0", private, FoundationAPI(items), seed=0)
    messages = [["pe", rnd, run.expert_id, direction, payload_bytes(payload), pe_body_bytes(rnd, direction, payload)]
                for rnd, direction, payload in run.messages]
    # The wire bytes are the JSON body each message would be: its round and its texts or counts.
    first = run.messages[0]
    assert messages[0][5] == len(body({"round": 0, "candidates": [list(c) for c in first[2]]}))
    return messages


@pytest.mark.parametrize("producer", ["fedgrpo", "fedpetuning", "dpsda"])
def test_every_methods_byte_totals_are_the_sums_of_its_messages_wire_sizes(producer, tmp_path):
    messages = {"fedgrpo": lambda: _fedgrpo_messages(tmp_path), "fedpetuning": lambda: _fedpetuning_messages(tmp_path),
                "dpsda": _dpsda_messages}[producer]()
    assert messages and all(len(m) == 6 and m[5] > 0 for m in messages)  # every message has its wire size
    for column in (4, 5):  # payload, wire
        totals = byte_totals(messages, column)
        for direction in ("down", "up"):
            assert totals[direction] == sum(m[column] for m in messages if m[3] == direction)
        assert totals["total"] == totals["down"] + totals["up"] and totals["unrecorded"] == 0
