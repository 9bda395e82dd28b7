"""The messages as a site's expert service carries them: JSON bodies (UTF-8, no spaces), byte strings
as base64 text. One codec for the bodies that travel (`engines.expert_service`: the service and its
`RemoteExpert`) and for the size the embedded engine records as a message's wire bytes: what the
body would be, had the message gone to an expert service.

The fields are the reply and request contract's (`transport.contract`: the `*_fields` functions
write them, the `*_from_fields` read them back under the contract). Reading a body checks it is one
plain JSON value first (`parse_json_body`: no repeated field name, no nesting past the parser's
limit): a request that is not is refused (`RequestRefused`), a reply (`ReplyRefused`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict
from typing import Any

from fedgrpo.transport.contract import (
    ReplyRefused,
    RequestRefused,
    calibration_reply_fields,
    calibration_reply_from_fields,
    calibration_request_from_fields,
    score_reply_fields,
    score_reply_from_fields,
    score_request_fields,
    score_request_from_fields,
)
from fedgrpo.types import (
    CalibrationRequest,
    Hello,
    Reads,
    WireCalibrationReply,
    WireScoreReply,
    WireScoreRequest,
)


def body(fields: Any) -> bytes:
    """A JSON body: UTF-8, no spaces."""
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def score_request_body(request: WireScoreRequest) -> bytes:
    return body(score_request_fields(request, _text_of))


def calibration_request_body(request: CalibrationRequest) -> bytes:
    return body(asdict(request))


def score_reply_body(reply: WireScoreReply) -> bytes:
    return body(score_reply_fields(reply, _text_of))


def calibration_reply_body(reply: WireCalibrationReply) -> bytes:
    return body(calibration_reply_fields(reply, _text_of))


def hello_body(hello: Hello) -> bytes:
    return body({"expert_id": hello.expert_id, "domain": hello.domain, "privacy": hello.privacy,
                 "reads": hello.reads.value})


def score_request_of(data: bytes) -> WireScoreRequest:
    """The request a body holds, under the request contract; else RequestRefused."""
    return score_request_from_fields(parse_json_body(data), _bytes_of(RequestRefused))


def calibration_request_of(data: bytes) -> CalibrationRequest:
    return calibration_request_from_fields(parse_json_body(data))


def score_reply_of(data: bytes) -> WireScoreReply:
    """The reply a body holds (its fields under the reply contract; its values are checked against
    the request by the caller); else ReplyRefused."""
    return score_reply_from_fields(_reply_json(data), _bytes_of(ReplyRefused))


def calibration_reply_of(data: bytes) -> WireCalibrationReply:
    return calibration_reply_from_fields(_reply_json(data), _bytes_of(ReplyRefused))


def hello_of(data: bytes) -> Hello:
    """The hello a body holds (an expert that declares no `reads` gets full texts)."""
    fields = _reply_json(data)
    if not isinstance(fields, dict):
        raise ReplyRefused("a hello is not a JSON object")
    privacy = fields.get("privacy") or {}
    reads = fields.get("reads", Reads.TEXTS.value)
    if not isinstance(privacy, dict):
        raise ReplyRefused("its privacy declaration is not an object")
    if reads not in {r.value for r in Reads}:
        raise ReplyRefused(f"it reads {str(reads)[:20]!r}, not one of {', '.join(r.value for r in Reads)}")
    return Hello(str(fields["expert_id"]), str(fields["domain"]), privacy, Reads(reads))


def parse_json_body(data: bytes) -> Any:
    """The JSON value of a request body; RequestRefused for anything that is not JSON, repeats a
    field name (which one would win is the parser's choice, not the sender's), or nests deeper than
    the parser's recursion limit."""
    try:
        return json.loads(data, object_pairs_hook=_fields_once)
    except RecursionError:
        raise RequestRefused("the body nests deeper than a request can") from None
    except RequestRefused:
        raise
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, a number of thousands of digits
        raise RequestRefused(f"the body is not JSON: {' '.join(str(exc).split())[:200]}") from None


def _reply_json(data: bytes) -> Any:
    try:
        return parse_json_body(data)
    except RequestRefused as exc:
        raise ReplyRefused(str(exc).replace("request", "reply")) from None


def _fields_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object's fields, each name once."""
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise RequestRefused(f"field {repr(name)[:40]} appears twice in one object")
        fields[name] = value
    return fields


def _text_of(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes_of(refused: type[ValueError]) -> Any:
    """A reader of base64 fields that raises `refused`: only canonical base64 text is read (one
    text per byte string, as the contract has one encoding per value)."""

    def read(value: Any, what: str) -> bytes:
        if type(value) is not str:
            raise refused(f"{what} is not a base64 text")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise refused(f"{what} is not base64") from None
        if _text_of(data) != value:
            raise refused(f"{what} is not canonical base64")
        return data

    return read
