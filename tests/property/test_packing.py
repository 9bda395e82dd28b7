"""Rewards at their information content and each question's distinct answers (`core.packing`), against
slow references: bits as a loop packs them; every reward vector round-trips, NaN masks included (0/1
vectors exactly, real ones within the quantisation error); the contract accepts exactly the one
encoding of a vector and refuses each malformation; every candidate gets the reward its own answer
earns.

Run: pytest tests/property/test_packing.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.core.packing import (
    QUANTISATION_ERROR,
    compress_texts,
    decompress_texts,
    distinct_answers,
    pack_bits,
    pack_rewards,
    packing_problem,
    spread,
    unpack_bits,
    unpack_rewards,
)
from fedgrpo.types import NO_ANSWER, PackedRewards, RewardForm

binary = st.sampled_from([0.0, 1.0, math.nan])
real = st.one_of(st.floats(0.0, 1.0), st.just(math.nan))


def _slow_bits(flags: list[bool]) -> bytes:
    """Bit i is bit i % 8 of byte i // 8, one flag at a time."""
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _same(a, b) -> bool:
    """Equal vectors, NaN equal to NaN."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


@given(st.lists(st.booleans(), max_size=40))
def test_bits_are_packed_as_a_loop_packs_them(flags):
    assert pack_bits(flags) == _slow_bits(flags)
    assert unpack_bits(_slow_bits(flags), len(flags)).tolist() == flags


@given(st.lists(binary, max_size=40))
def test_binary_rewards_round_trip_exactly_at_one_bit_each(values):
    packed = pack_rewards(values)
    n = len(values)
    assert packed.form is RewardForm.BITS and packing_problem(packed, n) is None
    assert _same(unpack_rewards(packed, n).tolist(), values)
    # One bit per value, and one per value more only where some value is missing.
    assert len(packed.values) == (n + 7) // 8
    assert len(packed.mask) == ((n + 7) // 8 if any(math.isnan(v) for v in values) else 0)


@given(st.lists(real, max_size=40))
def test_real_rewards_round_trip_within_the_quantisation_error(values):
    packed = pack_rewards(values)
    n = len(values)
    out = unpack_rewards(packed, n)
    # 8-bit levels, unless every present value is within 1/510 of 0 or 1: then one bit each.
    levels = [round(255 * x) for x in values if not math.isnan(x)]
    if all(level in (0, 255) for level in levels):
        assert packed.form is RewardForm.BITS and len(packed.values) == (n + 7) // 8
    else:
        assert packed.form is RewardForm.Q8 and len(packed.values) == n
    assert [math.isnan(x) for x in out] == [math.isnan(x) for x in values]  # the mask, exactly
    present = [(a, b) for a, b in zip(out, values) if not math.isnan(b)]
    assert all(abs(a - b) <= QUANTISATION_ERROR + 1e-12 for a, b in present)
    # Quantised values are fixed points: sending one again changes nothing (an answer journalled once).
    assert pack_rewards(out) == packed


@st.composite
def mutated(draw):
    """A vector's packing with one change: a bit flipped in its values or mask, a byte added or dropped,
    the form switched, the mask added or dropped."""
    values = draw(st.lists(st.one_of(binary, real), min_size=1, max_size=20))
    packed = pack_rewards(values)
    n = len(values)
    data, mask, form = bytearray(packed.values), bytearray(packed.mask), packed.form
    change = draw(st.sampled_from(["flip-value", "flip-mask", "add", "drop", "form", "mask-on", "mask-off"]))
    if change == "flip-value" and data:
        i = draw(st.integers(0, 8 * len(data) - 1))
        data[i // 8] ^= 1 << (i % 8)
    elif change == "flip-mask" and mask:
        i = draw(st.integers(0, 8 * len(mask) - 1))
        mask[i // 8] ^= 1 << (i % 8)
    elif change == "add":
        data.append(draw(st.integers(0, 255)))
    elif change == "drop" and data:
        data.pop()
    elif change == "form":
        form = RewardForm.Q8 if form is RewardForm.BITS else RewardForm.BITS
    elif change == "mask-on":
        mask = bytearray(draw(st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8)))
    else:
        mask = bytearray()
    return PackedRewards(form, bytes(data), bytes(mask)), n


@settings(max_examples=500)
@given(mutated())
def test_the_contract_accepts_only_the_one_encoding_of_a_vector(case):
    packed, n = case
    if packing_problem(packed, n) is None:
        # Whatever is accepted is what packing the values it holds gives: one encoding per vector.
        assert pack_rewards(unpack_rewards(packed, n)) == packed


@pytest.mark.parametrize("packed, n, allow_missing, reason", [
    (PackedRewards(RewardForm.BITS, b"\x01\x00", b""), 5, True, "2 bytes of bits values for 5 rewards"),
    (PackedRewards(RewardForm.Q8, b"\x80" * 4, b""), 5, True, "4 bytes of q8 values for 5 rewards"),
    (PackedRewards(RewardForm.BITS, bytes([0b100000]), b""), 5, True, "value bits set past the last reward"),
    (PackedRewards(RewardForm.BITS, b"\x00", b"\x00"), 5, True, "a mask with no value missing"),
    (PackedRewards(RewardForm.BITS, b"\x00", bytes([0b1000000])), 5, True, "mask bits set past the last reward"),
    (PackedRewards(RewardForm.BITS, b"\x00", b"\x01\x00"), 5, True, "a mask of 2 bytes for 5 rewards"),
    (PackedRewards(RewardForm.BITS, b"\x01", b"\x01"), 5, True, "a value set where the mask says it is missing"),
    (PackedRewards(RewardForm.Q8, b"\x80\x01", b"\x02"), 2, True, "a value set where the mask says it is missing"),
    (PackedRewards(RewardForm.Q8, b"\x00\xff", b""), 2, True, "they go as bits"),
    (PackedRewards(RewardForm.BITS, b"\x00", b"\x01"), 5, False, "where every value is required"),
    (PackedRewards("bits", b"\x00", b""), 5, True, "form 'bits' is not one of"),
    (PackedRewards(RewardForm.BITS, [0], b""), 1, True, "must be bytes"),
    ((1.0, 0.0), 2, True, "not packed rewards"),
])
def test_each_malformed_packing_is_refused_with_its_reason(packed, n, allow_missing, reason):
    problem = packing_problem(packed, n, allow_missing=allow_missing)
    assert problem is not None and reason in problem


answers = st.one_of(st.none(), st.sampled_from(["5", "7", "5.0", "x", "\\frac{1}{2}"]))


@given(st.lists(answers, min_size=1, max_size=12), st.data())
def test_every_candidate_gets_the_reward_its_own_answer_earns(candidates, data):
    distinct, index = distinct_answers(candidates)
    keys = [NO_ANSWER if a is None else a for a in candidates]
    # Each answer once, in order of first appearance; each candidate points at its own.
    assert distinct == tuple(dict.fromkeys(keys)) and [distinct[i] for i in index] == keys
    rewards = data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.4, math.nan]), min_size=len(distinct),
                                 max_size=len(distinct)))
    earned = dict(zip(distinct, rewards))  # the slow reference: a reward per answer, looked up per candidate
    assert _same(spread(rewards, index), [earned[k] for k in keys])


@given(st.lists(st.text(max_size=30), max_size=10))
def test_texts_survive_compression(texts):
    assert decompress_texts(compress_texts(texts)) == texts


def test_compressed_texts_that_inflate_past_the_limit_are_refused():
    blob = compress_texts(["a" * 10_000])
    assert len(blob) < 200
    with pytest.raises(ValueError, match="inflate to more than 1000 bytes"):
        decompress_texts(blob, limit=1000)
    with pytest.raises(ValueError, match="cut short"):
        decompress_texts(blob[:-3])


def test_a_reward_outside_the_range_is_not_packed():
    with pytest.raises(ValueError, match="outside"):
        pack_rewards(np.array([0.5, 1.5]))


def test_the_modules_worked_examples_run():
    import doctest

    from fedgrpo.core import packing

    assert doctest.testmod(packing).failed == 0
