"""FedGRPO's messages as Flower records, both ways; pure functions, testable without a grid.

| message type | down (server -> node)                                   | up (node -> server)                         |
|---|---|---|
| `query.hello`     | empty                                            | ConfigRecord `expert-id`, `domain`, `privacy` (JSON: its declared guarantees) |
| `query.calibrate` | ConfigRecord: question-id, generator, question, answer (lists) | MetricRecord `correct` (one bit per item) |
| `query.score`     | ConfigRecord: step, question-id, generator, question (lists), candidates (flat list), num-candidates | MetricRecord `step`, `rewards` (one float per candidate) |

The value types (`fedgrpo.types`) stay the contract: payload bytes are counted on them
(`core.comm.payload_bytes`) exactly as on the embedded engine, so byte counts agree across engines.

An error reply (the node's handler raised) carries the failure's kind (`types.FailureKind`) in its
Flower error code (`failure_code`, `failure_kind_of_code`), so the server switches on a number, not
on the reason's words.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedgrpo.transport.contract import (
    ReplyRefused,
    calibration_reply_from_fields,
    check_size,
    score_reply_from_fields,
)
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
}
_KIND_OF_CODE = {code: kind for kind, code in FAILURE_CODES.items()}


def failure_code(kind: FailureKind) -> int:
    """The error code an error reply carries for a failure of this kind."""
    return FAILURE_CODES[kind]


def failure_kind_of_code(code: int) -> FailureKind:
    """The kind an error reply's code says; ERROR for any code not ours (Flower's own errors)."""
    return _KIND_OF_CODE.get(code, FailureKind.ERROR)


def encode_hello_reply(hello: Hello) -> RecordDict:
    return RecordDict({"hello": ConfigRecord({"expert-id": hello.expert_id, "domain": hello.domain,
                                              "privacy": json.dumps(hello.privacy)})})


def decode_hello_reply(content: RecordDict) -> Hello:
    record = content["hello"]
    privacy = json.loads(str(record["privacy"])) if "privacy" in record else {}
    if not isinstance(privacy, dict):
        raise ValueError("a hello's privacy declaration must be a JSON object")
    return Hello(str(record["expert-id"]), str(record["domain"]), privacy)


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


def encode_calibration_reply(reply: CalibrationReply) -> RecordDict:
    return RecordDict({"calibration": MetricRecord({"correct": [float(b) for b in reply.correct]})})


def decode_calibration_reply(content: RecordDict) -> CalibrationReply:
    """Exactly one MetricRecord ``calibration`` with exactly ``correct``; else ReplyRefused."""
    return calibration_reply_from_fields(_only_record(content, "calibration"))


def encode_score_request(request: ScoreRequest) -> RecordDict:
    items = request.items
    return RecordDict({"score": ConfigRecord({
        "step": request.step,
        "question-id": [i.question_id for i in items],
        "generator": [i.generator for i in items],
        "question": [i.question for i in items],
        "candidates": [c for i in items for c in i.candidates],
        "num-candidates": [len(i.candidates) for i in items],
    })})


def decode_score_request(content: RecordDict) -> ScoreRequest:
    r = content["score"]
    candidates = list(r["candidates"])
    items, offset = [], 0
    for qid, gen, text, n in zip(r["question-id"], r["generator"], r["question"], r["num-candidates"],
                                 strict=True):
        items.append(ScoreItem(str(qid), str(gen), str(text), tuple(candidates[offset:offset + n])))
        offset += n
    if offset != len(candidates):
        raise ValueError(f"score request holds {len(candidates)} candidates, its items count {offset}")
    return ScoreRequest(int(r["step"]), tuple(items))


def encode_score_reply(reply: ScoreReply) -> RecordDict:
    # Exactly one MetricRecord: the step it answers and one float per candidate, nothing else.
    return RecordDict({"rewards": MetricRecord({"step": reply.step,
                                                "rewards": [float(r) for r in reply.rewards]})})


def decode_score_reply(content: RecordDict) -> ScoreReply:
    """Exactly one MetricRecord ``rewards`` with exactly ``step`` and ``rewards``; else ReplyRefused."""
    return score_reply_from_fields(_only_record(content, "rewards"))


def _only_record(content: RecordDict, name: str) -> dict[str, object]:
    """The reply's one record, as plain fields, after the contract's checks on the wire: no other
    record, a MetricRecord, at most MAX_REPLY_BYTES (Flower's own count)."""
    if not isinstance(content, RecordDict):
        raise ReplyRefused(f"the reply content is a {type(content).__name__}, not a RecordDict")
    names = list(content.keys())
    if names != [name]:
        raise ReplyRefused(f"the reply holds records {names}, expected exactly [{name!r}]")
    record = content[name]
    if not isinstance(record, MetricRecord):
        raise ReplyRefused(f"record {name!r} is a {type(record).__name__}, not a MetricRecord")
    check_size(record.count_bytes())
    return dict(record)
