"""The reply contract, one place for every engine (embedded, Flower Simulation and Deployment, a site's
expert service): what a client may send up, and nothing else.

- A score reply: the step it answers (an integer) and exactly one reward per value of the request
  (per candidate, or per distinct answer in ANSWERS form), each a float in the declared range
  [REWARD_MIN, REWARD_MAX] or NaN ("no reward", which gets advantage 0). As it travels
  (`WireScoreReply`) the rewards are packed (`core.packing`): the one encoding of that many values in
  its form (BITS or Q8), with the right number of bytes, no bit set past the last value, a mask only
  where a value is missing and no value where the mask says missing (`packing_problem`).
- A calibration reply: exactly one correctness value per auxiliary item, each 0.0 or 1.0; as it
  travels, packed as BITS with no mask.
- On the wire (Flower records, the expert service's JSON): exactly the fields above (`step`, `form`,
  `values` and `mask`; a byte string that is empty is left out), no other record or field, and at most
  MAX_REPLY_BYTES.

Anything else is refused as a whole (`ReplyRefused`) and recorded as that expert's failure by the
caller: a reward of 1e9 is a protocol violation, not a big reward (it would dominate its group's
mean and standard deviation). The client side checks its own rewards before they leave
(`scorers.expert.LocalExpert`).

The request contract is the same strictness the other way, for a site's expert service
(`engines.expert_service`), which anything on its machine can reach: a request holds exactly its
fields; every text is a string (a string where a list of candidates belongs would otherwise be
scored character by character); the step is an integer, not a bool; counts and lengths are bounded
(MAX_ITEMS, MAX_CANDIDATES, MAX_REQUEST_CANDIDATES, MAX_TEXT_CHARS) and the body by
MAX_REQUEST_BYTES, checked before it is read; compressed texts inflate to at most MAX_TEXTS_BYTES.
Anything else is refused (`RequestRefused`) with a one-line reason, before the expert sees it.

A wire score request's fields, columnar (one list entry per item; `*_fields` write them, the
`*_from_fields` read them back, for JSON and Flower records alike; a list or byte string that would
be empty is left out):

| field | holds |
|---|---|
| `step`, `session`, `reads` | the step; the server's session name; what the candidates hold (`types.Reads`) |
| `refs`, `counts` | each item's question number in the session; its number of candidates (1 or more) |
| `answers` | ANSWERS form: every item's distinct final answers, one flat list of texts |
| `texts` | TEXTS form: every item's candidates, one JSON list compressed (`core.packing.compress_texts`) |
| `text_at`, `question_id`, `generator`, `question` | the items (by position, increasing) whose question travels, and its id, verifier and text |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

from fedgrpo.core.packing import compress_texts, decompress_texts, packing_problem
from fedgrpo.types import (
    REWARD_MAX,
    REWARD_MIN,
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    PackedRewards,
    QuestionText,
    Reads,
    RewardForm,
    ScoreReply,
    ScoreRequest,
    WireCalibrationReply,
    WireItem,
    WireScoreReply,
    WireScoreRequest,
    reward_in_range,
)

# How a byte string travels in a field: itself (a Flower record), or as a text (JSON: base64).
Binary = Callable[[bytes], Any]

MAX_REPLY_BYTES = 1 << 20  # far above any honest reply (4 bytes a candidate), far below a memory problem


class ReplyRefused(ValueError):
    """A reply that breaks the contract; its message says how."""


def check_score_reply(reply: Any, request: ScoreRequest) -> ScoreReply:
    """`reply` if it is a score reply with one allowed reward per candidate of `request` (per distinct
    answer in ANSWERS form), else ReplyRefused: a client's own check before its reply is packed.
    (Whether it answers the current step is the caller's: a stale reply is counted apart.)"""
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


def check_wire_score_reply(reply: Any, request: WireScoreRequest) -> WireScoreReply:
    """`reply` if it is a wire score reply whose rewards are the one packed encoding of one value per
    value of `request` (`core.packing.packing_problem`), else ReplyRefused."""
    if type(reply) is not WireScoreReply:
        raise ReplyRefused(f"not a score reply ({type(reply).__name__})")
    if type(reply.step) is not int:
        raise ReplyRefused(f"step is a {type(reply.step).__name__}, not an integer")
    problem = packing_problem(reply.rewards, request.num_values)
    if problem:
        raise ReplyRefused(f"{problem} ({request.num_values} values asked)")
    return reply


def check_wire_calibration_reply(reply: Any, request: CalibrationRequest) -> WireCalibrationReply:
    """`reply` if it packs one bit per auxiliary item of `request` (form BITS, nothing missing), else
    ReplyRefused."""
    if type(reply) is not WireCalibrationReply:
        raise ReplyRefused(f"not a calibration reply ({type(reply).__name__})")
    correct = reply.correct
    if type(correct) is PackedRewards and correct.form is not RewardForm.BITS:
        raise ReplyRefused(f"correctness values packed as {correct.form!s}, not bits")
    problem = packing_problem(correct, len(request.items), allow_missing=False)
    if problem:
        raise ReplyRefused(f"{problem} ({len(request.items)} items asked)")
    return reply


def check_size(size: int) -> None:
    if size > MAX_REPLY_BYTES:
        raise ReplyRefused(f"{size} bytes, more than the {MAX_REPLY_BYTES} a reply may take")


def score_reply_fields(reply: WireScoreReply, binary: Binary) -> dict[str, Any]:
    """The wire fields of a score reply (a byte string that is empty is left out)."""
    return {"step": reply.step, **_packed_fields(reply.rewards, binary)}


def calibration_reply_fields(reply: WireCalibrationReply, binary: Binary) -> dict[str, Any]:
    return _packed_fields(reply.correct, binary)


def _packed_fields(packed: PackedRewards, binary: Binary) -> dict[str, Any]:
    fields: dict[str, Any] = {"form": packed.form.value}
    if packed.values:
        fields["values"] = binary(packed.values)
    if packed.mask:
        fields["mask"] = binary(packed.mask)
    return fields


def score_reply_from_fields(fields: Any, binary: Callable[[Any, str], bytes] | None = None) -> WireScoreReply:
    """A wire score reply from its fields (a Flower record, a JSON object): exactly ``step`` (an
    integer), ``form`` and the byte strings ``values`` and ``mask`` where not empty (`binary` reads
    one: default, it must be bytes); the packed values are checked against the request later."""
    fields = _reply_fields(fields, {"step", "form"}, {"values", "mask"}, "score reply")
    if type(fields["step"]) is not int:
        raise ReplyRefused(f"step is a {type(fields['step']).__name__}, not an integer")
    return WireScoreReply(fields["step"], _packed(fields, binary or _raw_bytes))


def calibration_reply_from_fields(fields: Any,
                                  binary: Callable[[Any, str], bytes] | None = None) -> WireCalibrationReply:
    """A wire calibration reply from its fields: exactly ``form`` and ``values`` where not empty."""
    fields = _reply_fields(fields, {"form"}, {"values"}, "calibration reply")
    return WireCalibrationReply(_packed(fields, binary or _raw_bytes))


def _reply_fields(fields: Any, required: set[str], optional: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(fields, Mapping):
        raise ReplyRefused(f"{what} is a {type(fields).__name__}, not a record")
    keys = set(fields)
    extra, missing = sorted(map(str, keys - required - optional)), sorted(required - keys)
    if extra or missing:
        raise ReplyRefused(f"{what} fields: " + "; ".join(
            part for part in (f"unexpected {extra}" if extra else "", f"missing {missing}" if missing else "") if part))
    return fields


def _packed(fields: Mapping[str, Any], binary: Callable[[Any, str], bytes]) -> PackedRewards:
    form = fields["form"]
    if type(form) is not str or form not in {f.value for f in RewardForm}:
        raise ReplyRefused(f"form {str(form)[:20]!r} is not one of {', '.join(f.value for f in RewardForm)}")
    values = binary(fields["values"], "values") if "values" in fields else b""
    mask = binary(fields["mask"], "mask") if "mask" in fields else b""
    if "values" in fields and not values or "mask" in fields and not mask:
        raise ReplyRefused("an empty byte string is left out, not sent")
    return PackedRewards(RewardForm(form), values, mask)


def _raw_bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise ReplyRefused(f"{what} is a {type(value).__name__}, not bytes")
    return value


# --- the request contract (a site's expert service) ------------------------------------------------

# An honest score request at the paper's scale (64 questions of one expert, G = 4 candidates of 1,024
# tokens, about 4 KB each) is about 1 MB: the caps below leave 16 times that, and keep a hostile
# request far below a memory problem (a JSON body grows several-fold as Python objects).
MAX_REQUEST_BYTES = 16 << 20
MAX_ITEMS = 1 << 14  # items of one request (questions, or auxiliary items at calibration)
MAX_CANDIDATES = 1 << 10  # candidates of one item (G)
MAX_REQUEST_CANDIDATES = 1 << 16  # candidates of one request, all items together
MAX_TEXT_CHARS = 1 << 20  # one text: an id, a generator name, a question, a candidate, an answer
MAX_STEP = (1 << 63) - 1  # a step is a 64-bit count, as in a Flower record (and a question's number)
MAX_SESSION_CHARS = 64  # the server's session name
SCORE_REQUEST_FIELDS = {"step", "session", "reads"}
SCORE_ITEM_COLUMNS = ("refs", "counts")
SCORE_TEXT_COLUMNS = ("text_at", "question_id", "generator", "question")
SCORE_CANDIDATE_FIELD = {Reads.ANSWERS: "answers", Reads.TEXTS: "texts"}
CALIBRATION_REQUEST_FIELDS = {"items"}
CALIBRATION_ITEM_FIELDS = {"question_id", "generator", "question", "answer"}


class RequestRefused(ValueError):
    """A request that breaks the request contract; its message says how, on one line."""


def check_request_size(size: int) -> None:
    """Refuse a request body of more than MAX_REQUEST_BYTES (before reading it, from its declared size)."""
    if size > MAX_REQUEST_BYTES:
        raise RequestRefused(f"{size} bytes, more than the {MAX_REQUEST_BYTES} a request may take")


def score_request_fields(request: WireScoreRequest, binary: Binary) -> dict[str, Any]:
    """The wire fields of a score request (module docstring's table; empty lists are left out)."""
    items = request.items
    fields: dict[str, Any] = {"step": request.step, "session": request.session, "reads": request.reads.value}
    if not items:
        return fields
    fields["refs"] = [item.ref for item in items]
    fields["counts"] = [len(item.candidates) for item in items]
    candidates = [c for item in items for c in item.candidates]
    if request.reads is Reads.ANSWERS:
        fields["answers"] = candidates
    else:
        fields["texts"] = binary(compress_texts(candidates))
    sent = [(i, item.text) for i, item in enumerate(items) if item.text is not None]
    if sent:
        fields["text_at"] = [i for i, _ in sent]
        fields["question_id"] = [t.question_id for _, t in sent]
        fields["generator"] = [t.generator for _, t in sent]
        fields["question"] = [t.question for _, t in sent]
    return fields


def score_request_from_fields(fields: Any, binary: Callable[[Any, str], bytes] | None = None) -> WireScoreRequest:
    """A wire score request from its fields (a JSON object, a Flower record): exactly ``step`` (an
    integer in [0, MAX_STEP], not a bool), ``session`` (a text), ``reads`` (`types.Reads`) and, when
    it has items, their columns (module docstring's table): one ref and one count (1 to
    MAX_CANDIDATES) per item, exactly as many candidates as the counts add up to (`answers`, texts;
    or `texts`, a byte string read by `binary` that inflates to that many texts), and the questions
    that travel at increasing positions. Else RequestRefused.

    >>> score_request_from_fields({"step": 3, "session": "s", "reads": "answers", "refs": [0], "counts": [2],
    ...     "answers": ["2", ""], "text_at": [0], "question_id": ["q"], "generator": ["g"],
    ...     "question": ["1 + 1?"]}).num_values
    2
    >>> try:  # a string where the answers belong would be scored character by character
    ...     score_request_from_fields({"step": 3, "session": "s", "reads": "answers", "refs": [0],
    ...                                "counts": [2], "answers": "23"})
    ... except RequestRefused as exc:
    ...     print(exc)
    answers is a string, not a list of texts
    """
    if type(fields) is not dict:
        raise RequestRefused(f"score request is a {_json_type(fields)}, not an object")
    reads = fields.get("reads")
    if type(reads) is not str or reads not in {r.value for r in Reads}:
        raise RequestRefused(f"reads {_shown(reads)} is not one of {', '.join(r.value for r in Reads)}")
    form = Reads(reads)
    candidate_field = SCORE_CANDIDATE_FIELD[form]
    has_items = any(name in fields for name in (*SCORE_ITEM_COLUMNS, candidate_field))
    has_texts = any(name in fields for name in SCORE_TEXT_COLUMNS)
    expected = SCORE_REQUEST_FIELDS | ({*SCORE_ITEM_COLUMNS, candidate_field} if has_items else set()) \
        | (set(SCORE_TEXT_COLUMNS) if has_texts else set())
    fields = _request_fields(fields, expected, "score request")
    step = _count(fields["step"], "step")
    session = _text(fields["session"], "session")
    if len(session) > MAX_SESSION_CHARS:
        raise RequestRefused(f"session holds {len(session)} characters, more than {MAX_SESSION_CHARS}")
    if not has_items:
        if has_texts:
            raise RequestRefused("questions sent with no item to score")
        return WireScoreRequest(step, session, form, ())
    refs = [_count(r, f"refs[{i}]") for i, r in enumerate(_request_list(fields["refs"], "refs", 1, MAX_ITEMS, "integers"))]
    counts = _request_list(fields["counts"], "counts", len(refs), len(refs), "integers")
    counts = [_count(n, f"counts[{i}]", least=1, most=MAX_CANDIDATES) for i, n in enumerate(counts)]
    total = sum(counts)
    if total > MAX_REQUEST_CANDIDATES:
        raise RequestRefused(f"{total} candidates, more than the {MAX_REQUEST_CANDIDATES} a request may hold")
    if form is Reads.ANSWERS:
        flat = _request_list(fields["answers"], "answers", total, total, "texts")
    else:
        try:
            flat = decompress_texts((binary or _raw_request_bytes)(fields["texts"], "texts"))
        except ValueError as exc:
            raise RequestRefused(f"texts: {exc}") from None
        if len(flat) != total:
            raise RequestRefused(f"texts holds {len(flat)} candidates, the counts add up to {total}")
    flat = [_text(c, f"{candidate_field}[{j}]") for j, c in enumerate(flat)]
    texts = _question_texts(fields, len(refs)) if has_texts else {}
    items, offset = [], 0
    for i, (ref, n) in enumerate(zip(refs, counts)):
        items.append(WireItem(ref, texts.get(i), tuple(flat[offset:offset + n])))
        offset += n
    return WireScoreRequest(step, session, form, tuple(items))


def _question_texts(fields: Mapping[str, Any], items: int) -> dict[int, QuestionText]:
    """Item position -> the question sent with it: positions increasing and within the items, each
    with an id, a verifier and a text."""
    at = _request_list(fields["text_at"], "text_at", 1, items, "integers")
    positions = [_count(i, f"text_at[{k}]", most=items - 1) for k, i in enumerate(at)]
    if any(b <= a for a, b in pairwise(positions)):
        raise RequestRefused("text_at is not increasing")
    columns = {name: [_text(v, f"{name}[{k}]") for k, v in enumerate(
        _request_list(fields[name], name, len(positions), len(positions), "texts"))]
               for name in SCORE_TEXT_COLUMNS[1:]}
    return {i: QuestionText(columns["question_id"][k], columns["generator"][k], columns["question"][k])
            for k, i in enumerate(positions)}


def _count(value: Any, what: str, least: int = 0, most: int = MAX_STEP) -> int:
    """`value` if it is an integer (not a bool) in [least, most]."""
    if type(value) is not int:  # a bool is an int to Python, not a count
        raise RequestRefused(f"{what} is a {_json_type(value)}, not an integer")
    if not least <= value <= most:
        raise RequestRefused(f"{what} {value} outside [{least}, {most}]")
    return value


def _raw_request_bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise RequestRefused(f"{what} is a {_json_type(value)}, not bytes")
    return value


def _shown(value: Any) -> str:
    """A value in a one-line reason: shortened and escaped."""
    return repr(value)[:40]


def calibration_request_from_fields(fields: Any) -> CalibrationRequest:
    """A calibration request from its wire fields: exactly ``items``, a list of objects with exactly
    ``question_id``, ``generator``, ``question`` and ``answer`` (texts); else RequestRefused."""
    fields = _request_fields(fields, CALIBRATION_REQUEST_FIELDS, "calibration request")
    items = _request_list(fields["items"], "items", 0, MAX_ITEMS, "objects")
    return CalibrationRequest(tuple(_calibration_item(item, f"items[{i}]") for i, item in enumerate(items)))


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
