"""Closed forms of communication at the paper's scale."""

from __future__ import annotations

import pytest

from fedgrpo.core.costs import (
    FP32,
    QWEN25,
    dpsda_bytes,
    fedgrpo_bytes,
    fedpetuning_bytes,
    lora_parameters,
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


def test_method_formulas():
    m = QWEN25[0]
    assert fedpetuning_bytes(m, 8, rounds=3, clients_per_round=2) == 2 * 3 * 2 * lora_parameters(m, 8) * FP32
    f = fedgrpo_bytes(questions=10, experts=2, candidates=4, question_bytes=5, candidate_bytes=7, clients=3,
                      aux_items=2, answer_bytes=1)
    assert f["up"] == 10 * 2 * 4 * 4 + 3 * 2 * 4 and f["down"] == 10 * 2 * (5 + 28) + 3 * 2 * 6
    d = dpsda_bytes(clients=2, rounds=3, candidates=5, synthetic=4, sample_bytes=10)
    assert d == {"down": 300, "up": 2 * (60 + 40), "total": 500, "synthetic_up_only": 80}
