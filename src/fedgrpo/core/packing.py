r"""What an expert's messages are reduced to (issue 22): each question's candidates by their distinct
final answers, rewards at their information content, full texts compressed. Pure functions.

**Answers.** A scorer that only compares a candidate's final answer with a reference (answer-based,
model-based, the verifier) gives two candidates with the same final answer the same reward. So a
request carries each distinct answer of an item once, in order of first appearance
(`distinct_answers`; NO_ANSWER for candidates without one), and the server gives every candidate the
reward its own answer earned (`spread`):

    >>> distinct_answers(["5", "7", "5", None])
    (('5', '7', ''), (0, 1, 0, 2))
    >>> spread((1.0, 0.0, 0.0), (0, 1, 0, 2))
    (1.0, 0.0, 1.0, 0.0)

**Rewards.** A reply's values are 0/1 (agreement, randomised response) or reals in [0, 1] (a plug-in
scorer's partial credit, bounded Laplace noise), or NaN (no reward). They travel as

- Q8, one byte per value, round(255 v): within QUANTISATION_ERROR = 1/510 of the value;
- BITS, one bit per value, when every present value's level is 0 or 255 (0/1 rewards: exact);

with a mask of one bit per value, set where the value is missing, left out when none is. Bit i of a
bit string is bit i % 8 (least significant first) of byte i // 8. One encoding per vector: bits past
the last value are 0, a missing value's own bits are 0, a mask with no bit set is left out, and a
vector goes as Q8 only when some value is neither 0 nor 1; so the reply contract
(`packing_problem`) refuses anything else, and whatever it accepts is what `pack_rewards` makes of
the values it holds.

    >>> packed = pack_rewards([1.0, 0.0, float("nan"), 1.0])
    >>> packed.form.value, packed.values, packed.mask
    ('bits', b'\t', b'\x04')
    >>> unpack_rewards(packed, 4).tolist()
    [1.0, 0.0, nan, 1.0]
    >>> unpack_rewards(pack_rewards([0.5]), 1).tolist()  # 128 / 255
    [0.5019607843137255]

**Texts.** A scorer that reads the reasoning gets every candidate's full text, compressed with zlib
as one JSON list per request (`compress_texts`); the receiver inflates at most MAX_TEXTS_BYTES.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence

import numpy as np

from fedgrpo.types import NO_ANSWER, PackedRewards, RewardForm

LEVELS = 255  # Q8: a value v travels as round(LEVELS * v), one byte
QUANTISATION_ERROR = 1 / (2 * LEVELS)  # the most a Q8 value differs from the one sent
TEXTS_LEVEL = 9  # zlib level of compressed texts (benchmarks/compression.py measured the choice)
MAX_TEXTS_BYTES = 64 << 20  # the most a request's compressed texts may inflate to


# --- distinct answers ----------------------------------------------------------------------------

def distinct_answers(answers: Sequence[str | None]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The distinct answers in order of first appearance (None -> NO_ANSWER), and each answer's
    position among them."""
    position: dict[str, int] = {}
    index = tuple(position.setdefault(NO_ANSWER if a is None else a, len(position)) for a in answers)
    return tuple(position), index


def spread(values: Sequence[float], index: Sequence[int]) -> tuple[float, ...]:
    """Every candidate's value: the value of its answer (`index` from `distinct_answers`)."""
    return tuple(values[i] for i in index)


# --- rewards as bits or 8-bit levels ---------------------------------------------------------------

def pack_bits(flags: Sequence[bool] | np.ndarray) -> bytes:
    """One bit per flag, least significant first; the last byte's unused bits are 0."""
    return np.packbits(np.asarray(flags, dtype=bool), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int) -> np.ndarray:
    """The first `count` flags of a bit string (`pack_bits`'s inverse)."""
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count, bitorder="little").astype(bool)


def pack_rewards(values: Sequence[float] | np.ndarray) -> PackedRewards:
    """`values` (each in [0, 1] or NaN) packed: Q8 levels round(255 v), sent as BITS when every present
    level is 0 or 255 (so 0/1 rewards exactly, and a value within 1/510 of 0 or 1 as that bit)."""
    v = np.asarray(values, dtype=float)  # (N,)
    missing = np.isnan(v)
    present = v[~missing]
    if np.any((present < 0.0) | (present > 1.0)):
        raise ValueError(f"a reward outside [0, 1]: {present[(present < 0.0) | (present > 1.0)][0]!r}")
    mask = pack_bits(missing) if missing.any() else b""
    levels = np.rint(np.where(missing, 0.0, v) * LEVELS).astype(np.uint8)  # (N,), 0 where missing
    if np.all((levels == 0) | (levels == LEVELS)):
        return PackedRewards(RewardForm.BITS, pack_bits(levels == LEVELS), mask)
    return PackedRewards(RewardForm.Q8, levels.tobytes(), mask)


def unpack_rewards(packed: PackedRewards, count: int) -> np.ndarray:
    """The `count` values of a well-formed packed vector (`packing_problem` is None), NaN where missing."""
    if packed.form is RewardForm.BITS:
        out = unpack_bits(packed.values, count).astype(float)
    else:
        out = np.frombuffer(packed.values, dtype=np.uint8)[:count] / LEVELS
    if packed.mask:
        out[unpack_bits(packed.mask, count)] = np.nan
    return out


def packing_problem(packed: object, count: int, *, allow_missing: bool = True) -> str | None:
    """Why `packed` is not the one encoding of `count` values (module docstring), or None."""
    if type(packed) is not PackedRewards:
        return f"rewards are a {type(packed).__name__}, not packed rewards"
    form, values, mask = packed.form, packed.values, packed.mask
    if type(form) is not RewardForm:
        return f"form {form!r} is not one of {', '.join(f.value for f in RewardForm)}"
    if type(values) is not bytes or type(mask) is not bytes:
        return "packed values and mask must be bytes"
    nbytes = math.ceil(count / 8)
    expected = nbytes if form is RewardForm.BITS else count
    if len(values) != expected:
        return f"{len(values)} bytes of {form.value} values for {count} rewards, not {expected}"
    if form is RewardForm.BITS and _stray_bits(values, count):
        return "value bits set past the last reward"
    missing = np.zeros(count, dtype=bool)
    if mask:
        if not allow_missing:
            return "a mask of missing values where every value is required"
        if len(mask) != nbytes:
            return f"a mask of {len(mask)} bytes for {count} rewards, not {nbytes}"
        if _stray_bits(mask, count):
            return "mask bits set past the last reward"
        missing = unpack_bits(mask, count)
        if not missing.any():
            return "a mask with no value missing (leave it out)"
        set_bits = unpack_bits(values, count) if form is RewardForm.BITS else np.frombuffer(values, np.uint8) != 0
        if np.any(missing & set_bits):
            return "a value set where the mask says it is missing"
    if form is RewardForm.Q8:
        levels = np.frombuffer(values, np.uint8)[~missing]
        if np.all((levels == 0) | (levels == LEVELS)):
            return "8-bit levels where every value is 0 or 1 (they go as bits)"
    return None


def _stray_bits(data: bytes, count: int) -> bool:
    """Whether a bit string of `count` flags has a bit set past the last one."""
    used = count % 8
    return bool(used and data and data[-1] >> used)


# --- full texts ------------------------------------------------------------------------------------

def compress_texts(texts: Sequence[str]) -> bytes:
    """`texts` as one zlib-compressed JSON list (UTF-8)."""
    raw = json.dumps(list(texts), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return zlib.compress(raw, TEXTS_LEVEL)


def decompress_texts(blob: bytes, limit: int = MAX_TEXTS_BYTES) -> list[str]:
    """The texts of `compress_texts`; ValueError for anything else, or for more than `limit` bytes
    once inflated (a small blob can inflate a thousandfold)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(blob, limit)
    except zlib.error as exc:
        raise ValueError(f"compressed texts that do not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"compressed texts inflate to more than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ValueError("compressed texts cut short or followed by other bytes")
    try:
        texts = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("compressed texts that are not a JSON list") from None
    if type(texts) is not list or any(type(t) is not str for t in texts):
        raise ValueError("compressed texts that are not a list of texts")
    return texts
