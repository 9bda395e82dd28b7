"""FedGRPO's messages as Flower records, both ways; pure functions, testable without a grid.

| message type | down (server -> node)                                   | up (node -> server)                         |
|---|---|---|
| `query.hello`     | empty                                            | ConfigRecord `expert-id`, `domain`, `privacy` (JSON: its declared guarantees), `reads` |
| `query.calibrate` | ConfigRecord: question-id, generator, question, answer (lists) | ConfigRecord `calibration`: `form` (bits), `values` (one bit per item) |
| `query.score`     | ConfigRecord `score`: the wire request's columns (`transport.contract`: step, session, reads, refs, counts, answers or compressed texts, the questions sent) | ConfigRecord `rewards`: `step`, `form`, `values`, `mask` where not empty (`core.packing`) |

The value types (`fedgrpo.types`) stay the contract: payload bytes are counted on them
(`core.comm.payload_bytes`) exactly as on the embedded engine, so byte counts agree across engines.
Wire bytes are a message's serialized size as Flower sends it (`message_bytes`).

An error reply (the node's handler raised) carries the failure's kind (`types.FailureKind`) in its
Flower error code (`failure_code`, `failure_kind_of_code`), so the server switches on a number, not
on the reason's words.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Message, RecordDict

from fedgrpo.transport.contract import (
    ReplyRefused,
    calibration_reply_fields,
    calibration_reply_from_fields,
    score_reply_fields,
    score_reply_from_fields,
    score_request_fields,
    score_request_from_fields,
)
from fedgrpo.types import (
    CalibrationItem,
    CalibrationRequest,
    FailureKind,
    Hello,
    Reads,
    WireCalibrationReply,
    WireScoreReply,
    WireScoreRequest,
)

HELLO, CALIBRATE, SCORE = "query.hello", "query.calibrate", "query.score"

# Error codes of FedGRPO's error replies, one per failure kind. Flower's own codes
# (flwr.common.constant.ErrorCode) are small numbers; ours sit far above them, so an error Flower
# makes itself (a node gone, a ClientApp that crashed) reads as ERROR, never as another kind.
FAILURE_CODES: dict[FailureKind, int] = {
    FailureKind.ERROR: 2100,
    FailureKind.BUDGET_SPENT: 2101,
    FailureKind.FLAGGED: 2102,
    FailureKind.TIMED_OUT: 2103,
    FailureKind.REFUSED: 2104,
    FailureKind.STALE: 2105,
    FailureKind.NEEDS_TEXT: 2106,
}
_KIND_OF_CODE = {code: kind for kind, code in FAILURE_CODES.items()}


def failure_code(kind: FailureKind) -> int:
    """The error code an error reply carries for a failure of this kind."""
    return FAILURE_CODES[kind]


def failure_kind_of_code(code: int) -> FailureKind:
    """The kind an error reply's code says; ERROR for any code not ours (Flower's own errors)."""
    return _KIND_OF_CODE.get(code, FailureKind.ERROR)


def message_bytes(message: Message) -> int:
    """A message's serialized size as Flower sends it: the bytes of every object of its tree (the
    message with its metadata, its RecordDict, each record, each array chunk), each object once
    (Flower pushes an object once per id), in Flower's own serialization (each object's public
    `deflate`). `tests/unit/test_wire_bytes.py` holds it to the objects Flower's push sends."""
    total, seen, todo = 0, set(), [message]
    while todo:
        obj = todo.pop()
        if obj.object_id in seen:
            continue
        seen.add(obj.object_id)
        total += len(obj.deflate())
        todo.extend((obj.children or {}).values())
    return total


def encode_hello_reply(hello: Hello) -> RecordDict:
    return RecordDict({"hello": ConfigRecord({"expert-id": hello.expert_id, "domain": hello.domain,
                                              "privacy": json.dumps(hello.privacy), "reads": hello.reads.value})})


def decode_hello_reply(content: RecordDict) -> Hello:
    record = content["hello"]
    privacy = json.loads(str(record["privacy"])) if "privacy" in record else {}
    if not isinstance(privacy, dict):
        raise ValueError("a hello's privacy declaration must be a JSON object")
    reads = str(record["reads"]) if "reads" in record else Reads.TEXTS.value  # declares nothing: full texts
    return Hello(str(record["expert-id"]), str(record["domain"]), privacy, Reads(reads))


def encode_calibration_request(request: CalibrationRequest) -> RecordDict:
    items = request.items
    return RecordDict({"calibrate": ConfigRecord({
        "question-id": [i.question_id for i in items],
        "generator": [i.generator for i in items],
        "question": [i.question for i in items],
        "answer": [i.answer for i in items],
    })})


def decode_calibration_request(content: RecordDict) -> CalibrationRequest:
    r = content["calibrate"]
    return CalibrationRequest(tuple(
        CalibrationItem(str(q), str(g), str(t), str(a))
        for q, g, t, a in zip(r["question-id"], r["generator"], r["question"], r["answer"], strict=True)
    ))


def encode_calibration_reply(reply: WireCalibrationReply) -> RecordDict:
    return RecordDict({"calibration": ConfigRecord(calibration_reply_fields(reply, bytes))})


def decode_calibration_reply(content: RecordDict) -> WireCalibrationReply:
    """Exactly one ConfigRecord ``calibration`` with exactly its fields; else ReplyRefused."""
    return calibration_reply_from_fields(_only_record(content, "calibration"))


def encode_score_request(request: WireScoreRequest) -> RecordDict:
    return RecordDict({"score": ConfigRecord(score_request_fields(request, bytes))})


def decode_score_request(content: RecordDict) -> WireScoreRequest:
    """The request a node received, under the request contract (`transport.contract`); else
    RequestRefused."""
    return score_request_from_fields(dict(content["score"]))


def encode_score_reply(reply: WireScoreReply) -> RecordDict:
    # Exactly one ConfigRecord: the step it answers and the packed rewards, nothing else.
    return RecordDict({"rewards": ConfigRecord(score_reply_fields(reply, bytes))})


def decode_score_reply(content: RecordDict) -> WireScoreReply:
    """Exactly one ConfigRecord ``rewards`` with exactly its fields; else ReplyRefused. (Its size is
    checked on the message first, `flower_transport`.)"""
    return score_reply_from_fields(_only_record(content, "rewards"))


def _only_record(content: RecordDict, name: str) -> dict[str, object]:
    """The reply's one record, as plain fields, after the contract's checks on the wire: no other
    record, a ConfigRecord."""
    if not isinstance(content, RecordDict):
        raise ReplyRefused(f"the reply content is a {type(content).__name__}, not a RecordDict")
    names = list(content.keys())
    if names != [name]:
        raise ReplyRefused(f"the reply holds records {names}, expected exactly [{name!r}]")
    record = content[name]
    if not isinstance(record, ConfigRecord):
        raise ReplyRefused(f"record {name!r} is a {type(record).__name__}, not a ConfigRecord")
    return dict(record)
