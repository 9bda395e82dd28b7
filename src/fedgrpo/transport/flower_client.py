"""The client side of the Flower engine: handlers for `query.hello`, `query.calibrate`, `query.score`.

Each handler decodes the request, asks the site's `Endpoint` (in simulation the `ClientEndpoint` of an
in-process `LocalExpert`, kept across messages: it holds the session's question texts; in deployment
a `RemoteExpert` that forwards to the site's persistent expert service) and encodes the reply. A handler never raises: an exception becomes a Flower error reply carrying
the reason, and the failure's kind in its code (`flower_records.failure_code`), so the server
records a typed failure instead of waiting (a raising ClientApp can stall a simulation, flwr #4476).
"""

from __future__ import annotations

from flwr.app import Error, Message, RecordDict

from fedgrpo.transport.base import Endpoint, failure_kind
from fedgrpo.transport.contract import check_wire_calibration_reply, check_wire_score_reply
from fedgrpo.transport.flower_records import (
    decode_calibration_request,
    decode_score_request,
    encode_calibration_reply,
    encode_hello_reply,
    encode_score_reply,
    failure_code,
)


def handle_hello(message: Message, expert: Endpoint) -> Message:
    return _guard(message, lambda: encode_hello_reply(expert.hello()))


def handle_calibrate(message: Message, expert: Endpoint) -> Message:
    def build() -> RecordDict:
        request = decode_calibration_request(message.content)
        return encode_calibration_reply(check_wire_calibration_reply(expert.calibrate(request), request))

    return _guard(message, build)


def handle_score(message: Message, expert: Endpoint) -> Message:
    # The client side of the reply contract: nothing outside it leaves the node (an error reply instead).
    def build() -> RecordDict:
        request = decode_score_request(message.content)
        return encode_score_reply(check_wire_score_reply(expert.score(request), request))

    return _guard(message, build)


def error_reply(message: Message, exc: BaseException) -> Message:
    """The error reply for a handler that raised `exc`: its one-line reason, and its kind as the code."""
    return Message(Error(code=failure_code(failure_kind(exc)), reason=f"{type(exc).__name__}: {exc}"),
                   reply_to=message)


def _guard(message: Message, build) -> Message:  # type: ignore[no-untyped-def]
    try:
        return Message(build(), reply_to=message)
    except Exception as exc:  # noqa: BLE001 - every fault goes back to the server as an error reply
        return error_reply(message, exc)
