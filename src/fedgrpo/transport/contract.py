"""The reply contract, one place for every engine (embedded, Flower Simulation and Deployment, a site's
expert service): what a client may send up, and nothing else.

- A score reply: the step it answers (an integer) and exactly one reward per candidate, each a float
  in the declared range [REWARD_MIN, REWARD_MAX] or NaN ("no reward", which gets advantage 0).
- A calibration reply: exactly one correctness value per auxiliary item, each 0.0 or 1.0.
- On the wire (Flower records, the expert service's JSON): exactly the fields above, no other record
  or field, and at most MAX_REPLY_BYTES.

Anything else is refused as a whole (`ReplyRefused`) and recorded as that expert's failure by the
caller: a reward of 1e9 is a protocol violation, not a big reward (it would dominate its group's
mean and standard deviation). The client side checks its own rewards before they leave
(`scorers.expert.LocalExpert`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedgrpo.types import (
    REWARD_MAX,
    REWARD_MIN,
    CalibrationReply,
    CalibrationRequest,
    ScoreReply,
    ScoreRequest,
    reward_in_range,
)

MAX_REPLY_BYTES = 1 << 20  # far above any honest reply (4 bytes a candidate), far below a memory problem


class ReplyRefused(ValueError):
    """A reply that breaks the contract; its message says how."""


def check_score_reply(reply: Any, request: ScoreRequest) -> ScoreReply:
    """`reply` if it is a score reply with one allowed reward per candidate of `request`, else
    ReplyRefused. (Whether it answers the current step is the caller's: a stale reply is counted apart.)"""
    if type(reply) is not ScoreReply:
        raise ReplyRefused(f"not a score reply ({type(reply).__name__})")
    if type(reply.step) is not int:
        raise ReplyRefused(f"step is a {type(reply.step).__name__}, not an integer")
    rewards = reply.rewards
    if type(rewards) is not tuple:
        raise ReplyRefused(f"rewards are a {type(rewards).__name__}, not a tuple of floats")
    if len(rewards) != request.num_candidates:
        raise ReplyRefused(f"{len(rewards)} rewards for {request.num_candidates} candidates")
    for r in rewards:
        if type(r) is not float:
            raise ReplyRefused(f"a reward is a {type(r).__name__}, not a float")
        if not reward_in_range(r):
            raise ReplyRefused(f"reward {r!r} outside [{REWARD_MIN:g}, {REWARD_MAX:g}]")
    return reply


def check_calibration_reply(reply: Any, request: CalibrationRequest) -> CalibrationReply:
    """`reply` if it holds one 0.0-or-1.0 value per auxiliary item of `request`, else ReplyRefused."""
    if type(reply) is not CalibrationReply:
        raise ReplyRefused(f"not a calibration reply ({type(reply).__name__})")
    correct = reply.correct
    if type(correct) is not tuple:
        raise ReplyRefused(f"correctness values are a {type(correct).__name__}, not a tuple")
    if len(correct) != len(request.items):
        raise ReplyRefused(f"{len(correct)} bits for {len(request.items)} items")
    for b in correct:
        if type(b) is not float or b not in (0.0, 1.0):  # NaN is not in (0.0, 1.0) either
            raise ReplyRefused(f"a correctness value is {b!r}, not 0.0 or 1.0")
    return reply


def check_size(size: int) -> None:
    if size > MAX_REPLY_BYTES:
        raise ReplyRefused(f"{size} bytes, more than the {MAX_REPLY_BYTES} a reply may take")


def _exact_fields(fields: Any, expected: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(fields, Mapping):
        raise ReplyRefused(f"{what} is a {type(fields).__name__}, not a record")
    keys = set(fields)
    if keys != expected:
        extra, missing = sorted(map(str, keys - expected)), sorted(expected - keys)
        raise ReplyRefused(f"{what} fields: " + "; ".join(
            part for part in (f"unexpected {extra}" if extra else "", f"missing {missing}" if missing else "") if part))
    return fields


def _floats(values: Any, what: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)):
        raise ReplyRefused(f"{what} is a {type(values).__name__}, not a list of floats")
    if not all(type(v) is float for v in values):
        raise ReplyRefused(f"{what} holds a value that is not a float")
    return tuple(values)


def score_reply_from_fields(fields: Any) -> ScoreReply:
    """A score reply from its wire fields (a Flower MetricRecord, a JSON object): exactly ``step``
    (an integer) and ``rewards`` (floats); the values are checked against the request later."""
    fields = _exact_fields(fields, {"step", "rewards"}, "score reply")
    if type(fields["step"]) is not int:
        raise ReplyRefused(f"step is a {type(fields['step']).__name__}, not an integer")
    return ScoreReply(fields["step"], _floats(fields["rewards"], "rewards"))


def calibration_reply_from_fields(fields: Any) -> CalibrationReply:
    fields = _exact_fields(fields, {"correct"}, "calibration reply")
    return CalibrationReply(_floats(fields["correct"], "correct"))
