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

The request contract is the same strictness the other way, for a site's expert service
(`engines.expert_service`), which anything on its machine can reach: a request holds exactly its
fields; every text is a string (a string where a list of candidates belongs would otherwise be
scored character by character); the step is an integer, not a bool; counts and lengths are bounded
(MAX_ITEMS, MAX_CANDIDATES, MAX_REQUEST_CANDIDATES, MAX_TEXT_CHARS) and the body by
MAX_REQUEST_BYTES, checked before it is read. Anything else is refused (`RequestRefused`) with a
one-line reason, before the expert sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedgrpo.types import (
    REWARD_MAX,
    REWARD_MIN,
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    ScoreItem,
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


# --- the request contract (a site's expert service) ------------------------------------------------

# An honest score request at the paper's scale (64 questions of one expert, G = 4 candidates of 1,024
# tokens, about 4 KB each) is about 1 MB: the caps below leave 16 times that, and keep a hostile
# request far below a memory problem (a JSON body grows several-fold as Python objects).
MAX_REQUEST_BYTES = 16 << 20
MAX_ITEMS = 1 << 14  # items of one request (questions, or auxiliary items at calibration)
MAX_CANDIDATES = 1 << 10  # candidates of one item (G)
MAX_REQUEST_CANDIDATES = 1 << 16  # candidates of one request, all items together
MAX_TEXT_CHARS = 1 << 20  # one text: an id, a generator name, a question, a candidate, an answer
MAX_STEP = (1 << 63) - 1  # a step is a 64-bit count, as in a Flower record
SCORE_REQUEST_FIELDS = {"step", "items"}
SCORE_ITEM_FIELDS = {"question_id", "generator", "question", "candidates"}
CALIBRATION_REQUEST_FIELDS = {"items"}
CALIBRATION_ITEM_FIELDS = {"question_id", "generator", "question", "answer"}


class RequestRefused(ValueError):
    """A request that breaks the request contract; its message says how, on one line."""


def check_request_size(size: int) -> None:
    """Refuse a request body of more than MAX_REQUEST_BYTES (before reading it, from its declared size)."""
    if size > MAX_REQUEST_BYTES:
        raise RequestRefused(f"{size} bytes, more than the {MAX_REQUEST_BYTES} a request may take")


def score_request_from_fields(fields: Any) -> ScoreRequest:
    """A score request from its wire fields (a JSON object): exactly ``step`` (an integer in
    [0, MAX_STEP], not a bool) and ``items``, a list of objects with exactly ``question_id``,
    ``generator``, ``question`` (texts) and ``candidates`` (a list of 1 to MAX_CANDIDATES texts);
    else RequestRefused.

    >>> score_request_from_fields({"step": 3, "items": [
    ...     {"question_id": "q", "generator": "g", "question": "1 + 1?", "candidates": ["2", "3"]}]}).num_candidates
    2
    >>> try:  # a string where the candidates belong would be scored character by character
    ...     score_request_from_fields({"step": 3, "items": [
    ...         {"question_id": "q", "generator": "g", "question": "1 + 1?", "candidates": "23"}]})
    ... except RequestRefused as exc:
    ...     print(exc)
    items[0].candidates is a string, not a list of texts
    """
    fields = _request_fields(fields, SCORE_REQUEST_FIELDS, "score request")
    step = fields["step"]
    if type(step) is not int:  # a bool is an int to Python, not a step
        raise RequestRefused(f"step is a {_json_type(step)}, not an integer")
    if not 0 <= step <= MAX_STEP:
        raise RequestRefused(f"step {step} outside [0, {MAX_STEP}]")
    items = tuple(_score_item(item, f"items[{i}]")
                  for i, item in enumerate(_request_list(fields["items"], "items", 0, MAX_ITEMS, "objects")))
    total = sum(len(item.candidates) for item in items)
    if total > MAX_REQUEST_CANDIDATES:
        raise RequestRefused(f"{total} candidates, more than the {MAX_REQUEST_CANDIDATES} a request may hold")
    return ScoreRequest(step, items)


def calibration_request_from_fields(fields: Any) -> CalibrationRequest:
    """A calibration request from its wire fields: exactly ``items``, a list of objects with exactly
    ``question_id``, ``generator``, ``question`` and ``answer`` (texts); else RequestRefused."""
    fields = _request_fields(fields, CALIBRATION_REQUEST_FIELDS, "calibration request")
    items = _request_list(fields["items"], "items", 0, MAX_ITEMS, "objects")
    return CalibrationRequest(tuple(_calibration_item(item, f"items[{i}]") for i, item in enumerate(items)))


def _score_item(fields: Any, what: str) -> ScoreItem:
    fields = _request_fields(fields, SCORE_ITEM_FIELDS, what)
    candidates = _request_list(fields["candidates"], f"{what}.candidates", 1, MAX_CANDIDATES, "texts")
    return ScoreItem(_text(fields["question_id"], f"{what}.question_id"), _text(fields["generator"], f"{what}.generator"),
                     _text(fields["question"], f"{what}.question"),
                     tuple(_text(c, f"{what}.candidates[{j}]") for j, c in enumerate(candidates)))


def _calibration_item(fields: Any, what: str) -> CalibrationItem:
    fields = _request_fields(fields, CALIBRATION_ITEM_FIELDS, what)
    return CalibrationItem(*(_text(fields[name], f"{what}.{name}")
                             for name in ("question_id", "generator", "question", "answer")))


def _request_fields(fields: Any, expected: set[str], what: str) -> Mapping[str, Any]:
    """`fields` if it is an object with exactly the `expected` names. A name in the message is
    shortened and escaped (repr), so a hostile one cannot make the reason long or break its line."""
    if type(fields) is not dict:
        raise RequestRefused(f"{what} is a {_json_type(fields)}, not an object")
    extra, missing = sorted(set(fields) - expected), sorted(expected - set(fields))
    if extra or missing:
        shown = ", ".join(repr(name)[:40] for name in extra[:3]) + (", ..." if len(extra) > 3 else "")
        raise RequestRefused(f"{what} fields: " + "; ".join(
            part for part in (f"unexpected {shown}" if extra else "", f"missing {', '.join(missing)}" if missing else "")
            if part))
    return fields


def _request_list(values: Any, what: str, least: int, most: int, of: str) -> list[Any]:
    """`values` if it is a list of `least` to `most` entries (`of` names them, for the message)."""
    if type(values) is not list:
        raise RequestRefused(f"{what} is a {_json_type(values)}, not a list of {of}")
    if not least <= len(values) <= most:
        raise RequestRefused(f"{what} holds {len(values)} entries, not {least} to {most}")
    return values


def _text(value: Any, what: str) -> str:
    """`value` if it is a string of at most MAX_TEXT_CHARS that UTF-8 can encode (JSON's escapes can
    make a lone surrogate, which every later step that hashes or tokenises the text would trip on)."""
    if type(value) is not str:
        raise RequestRefused(f"{what} is a {_json_type(value)}, not a text")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestRefused(f"{what} holds {len(value)} characters, more than the {MAX_TEXT_CHARS} a text may take")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestRefused(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "object", list: "list", str: "string", bool: "bool", int: "integer", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)
