"""Closed forms of communication at the paper's scale."""

from __future__ import annotations

import pytest

from fedgrpo.core.costs import (
    FP32,
    PAPER_TOKENS,
    QWEN25,
    REPLY_HEADER,
    REQUEST_HEADER,
    Schedule,
    dpsda_bytes,
    fedgrpo_bytes,
    fedgrpo_range,
    fedpetuning_bytes,
    lora_parameters,
    paper_scale_table,
    schedule_from_shape,
)


def _slow_lora(model, rank):
    h, i, kv = model.hidden, model.intermediate, model.kv_dim
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down
    total = 0
    for _ in range(model.layers):
        for d_in, d_out in shapes:
            total += rank * d_in + rank * d_out  # A is r x d_in, B is d_out x r
    return total


@pytest.mark.parametrize("model", QWEN25, ids=lambda m: m.name)
def test_lora_parameters_against_a_loop(model):
    assert lora_parameters(model, 8) == _slow_lora(model, 8)
    assert lora_parameters(model, 16) == 2 * lora_parameters(model, 8)


def test_all_linear_lora_ratio_is_not_the_papers():
    small, mid, large = (lora_parameters(m, 8) for m in QWEN25)
    assert (round(mid / small, 2), round(large / small, 2)) == (1.62, 2.19)  # the paper's: 3.38, 9.26


SHAPE = {"questions": 10, "experts": 2, "candidates": 4, "clients": 3, "aux_items": 2, "question_bytes": 5}


def _slow_fedgrpo(s: Schedule, reads: str) -> tuple[float, float]:
    """Message by message, as `transport.session` sends them: every visit of every question to each of
    its experts is an item; items fill messages of `items_per_message`; texts go once per (question, expert)."""
    down = up = 0.0
    items = 10 * s.visits * 2
    per_message = s.items_per_message
    values = min(s.distinct_answers, 4) if reads == "answers" else 4
    value_bytes = s.answer_bytes if reads == "answers" else s.candidate_bytes * s.text_compression
    for _ in range(int(items / per_message)):
        down += REQUEST_HEADER + per_message * (8 + values * value_bytes)
        up += REPLY_HEADER + -(-per_message * values // 8)  # one bit per value, whole bytes
    down += 10 * 2 * (5 + s.id_bytes) + 3 * 2 * (5 + s.id_bytes + 20)  # texts once; the auxiliary set
    up += 3 * (len("bits") + 1)  # two calibration bits per client
    return down, up


@pytest.mark.parametrize("reads", ["answers", "texts"])
def test_fedgrpos_closed_form_counts_the_messages_it_sends(reads):
    schedule = Schedule(visits=4.0, distinct_answers=2.5, answer_bytes=3.0, candidate_bytes=11.0,
                        text_compression=0.5, items_per_message=4.0, id_bytes=30.0)
    f = fedgrpo_bytes(schedule, **SHAPE, reads=reads)
    assert (f["down"], f["up"]) == pytest.approx(_slow_fedgrpo(schedule, reads))


def test_method_formulas():
    m = QWEN25[0]
    assert fedpetuning_bytes(m, 8, rounds=3, clients_per_round=2) == 2 * 3 * 2 * lora_parameters(m, 8) * FP32
    d = dpsda_bytes(clients=2, rounds=3, candidates=5, synthetic=4, sample_bytes=10)
    assert d == {"down": 300, "up": 2 * (60 + 40), "total": 500, "synthetic_up_only": 80}


def test_fedgrpo_is_a_range_from_agreeing_answers_to_full_reasoning_texts():
    r = fedgrpo_range(Schedule(), **SHAPE)
    answers, texts = r["answers"], r["texts"]
    assert answers["low"] < answers["measured"] < answers["high"] < texts["low"] < texts["high"]
    # The upper end: every candidate a reasoning trace of the paper's 2,048 tokens, sent as it is.
    assert texts["high"] == fedgrpo_bytes(Schedule(candidate_bytes=PAPER_TOKENS * 4.0), **SHAPE, reads="texts")["total"]
    table = paper_scale_table()["Qwen2.5-Math-1.5B"]
    assert table["fedgrpo_range"]["answers"]["measured"] == table["fedgrpo"]


def test_a_runs_schedule_is_read_from_what_its_messages_held():
    shape = {"answers": {"requests": 10, "items": 40, "candidates": 320, "values": 100, "value_bytes": 300,
                         "candidate_bytes": 3200, "texts_sent": 8, "text_bytes": 256, "questions": 8, "visits": 36}}
    s = schedule_from_shape(shape)
    assert (s.visits, s.items_per_message, s.distinct_answers, s.answer_bytes, s.candidate_bytes) == (
        36 / 8, 4.0, 2.5, 3.0, 10.0)
    assert schedule_from_shape({}) == Schedule()  # nothing measured: the documented defaults
