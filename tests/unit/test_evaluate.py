"""Evaluation arithmetic with canned completions: pass@1, sampled mean and the mixed share."""

from __future__ import annotations

import pytest

from fedgrpo.data.prompts import PREFILL
from fedgrpo.data.tasks import Question
from fedgrpo.training import evaluate as ev


def _q(i: int, answer: str) -> Question:
    # basic_arithmetic's scorer needs no metadata: exact match, partial credit on substrings.
    return Question(f"q{i}", "arithmetic", "basic_arithmetic", f"Calculate {i}.", answer)


def test_scores_from_canned_completions(monkeypatch):
    questions = [_q(0, "4"), _q(1, "9"), _q(2, "12")]
    greedy = [["4</answer>"], ["8</answer>"], ["12"]]  # right, wrong, unclosed (wrong)
    sampled = [["4</answer>", "4</answer>"], ["9</answer>", "1</answer>"], ["x</answer>", ""]]

    def fake_generate(model, tokenizer, prompts, *, num_samples=1, temperature=None, **kwargs):
        assert prompts[0].endswith("<answer>")
        return sampled if temperature is not None else greedy

    monkeypatch.setattr(ev, "generate_completions", fake_generate)
    score = ev.score_questions(None, None, questions, style=PREFILL, samples=2, temperature=1.0, max_new_tokens=8,
                               batch_size=4, seed=0)
    assert score.n == 3
    assert score.pass_at_1 == pytest.approx(1 / 3)
    assert score.sampled_mean == pytest.approx(3 / 6)
    # Only question 1 has one right and one wrong sample.
    assert score.mixed_share == pytest.approx(1 / 3)


def test_partial_credit_is_not_correct():
    # '12' contains the gold '2': reasoning-gym gives partial credit, the correctness bit does not.
    assert ev.correctness([_q(0, "2")], [["12</answer>", "2</answer>"]], PREFILL) == [[False, True]]


def test_mean_over_domains_skips_missing_values():
    scores = {
        "a": ev.DomainScore(1, 0.5, None, None),
        "b": ev.DomainScore(1, 1.0, 0.25, 0.5),
    }
    assert ev.mean_over_domains(scores) == pytest.approx(0.75)
    assert ev.mean_over_domains(scores, "sampled_mean") == pytest.approx(0.25)
