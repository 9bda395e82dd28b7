"""One byte model for every message on every engine.

Payload bytes = UTF-8 bytes of every text field + the length of every byte string (packed rewards,
`core.packing`) + 8 per integer + 4 per float (fp32, as the paper's rewards) - summed over the
message's fields, recursively. Field names and framing are not counted: they depend on the wire
format (JSON, protobuf, HTTP headers); the traffic ledger records each message's serialized size as
it travels beside this model (`transport.base.TrafficLedger`).

    >>> from fedgrpo.types import ScoreReply
    >>> payload_bytes(ScoreReply(step=3, rewards=(1.0, 0.0, 1.0, 1.0)))
    24
    >>> from fedgrpo.core.packing import pack_rewards
    >>> from fedgrpo.types import WireScoreReply
    >>> payload_bytes(WireScoreReply(step=3, rewards=pack_rewards((1.0, 0.0, 1.0, 1.0))))  # 8 + "bits" + 1
    13
"""

from __future__ import annotations

import dataclasses
from typing import Any

INT_BYTES = 8
FLOAT_BYTES = 4


def payload_bytes(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return INT_BYTES
    if isinstance(value, float):
        return FLOAT_BYTES
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes):
        return len(value)
    if value is None:
        return 0
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(payload_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(payload_bytes(k) + payload_bytes(v) for k, v in value.items())
    raise TypeError(f"no byte model for {type(value).__name__}")
