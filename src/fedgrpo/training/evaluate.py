"""Held-out evaluation: greedy pass@1 per domain and the mean correctness of sampled completions.

Correctness is binarised (a partially credited answer is wrong), the same bit calibration and
answer-based rewards use. The sampled estimate also tells how often a question's samples disagree
(`mixed_share`): a question whose samples are all right or all wrong gives GRPO no signal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedgrpo.config import EvalConfig
from fedgrpo.data.gym import is_correct
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.durable import write_json_atomic
from fedgrpo.models.generate import generate_completions
from fedgrpo.progress import ProgressSink


@dataclass(frozen=True)
class DomainScore:
    """Scores of one model on one domain's held-out items."""

    n: int
    pass_at_1: float  # greedy, binarised
    sampled_mean: float | None  # mean correctness over `samples` draws per question
    mixed_share: float | None  # share of questions whose draws are neither all right nor all wrong

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def correctness(questions: Sequence[Question], completions: Sequence[Sequence[str]],
                style: PromptStyle) -> list[list[bool]]:
    return [
        [is_correct(q, style.extract(c)) for c in cs] for q, cs in zip(questions, completions, strict=True)
    ]


def score_questions(
    model: Any,
    tokenizer: Any,
    questions: Sequence[Question],
    *,
    style: PromptStyle,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
) -> DomainScore:
    prompts = [style.prompt(q.question) for q in questions]
    greedy = generate_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch
    )
    pass_at_1 = _mean([row[0] for row in correctness(questions, greedy, style)])
    sampled_mean = mixed = None
    if samples > 0:
        drawn = generate_completions(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, num_samples=samples,
            temperature=temperature, batch_size=batch_size, seed=seed, on_batch=on_batch,
        )
        bits = correctness(questions, drawn, style)
        sampled_mean = _mean([b for row in bits for b in row])
        mixed = _mean([0 < sum(row) < len(row) for row in bits])
    return DomainScore(len(questions), pass_at_1, sampled_mean, mixed)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    eval_sets: Mapping[str, Sequence[Question]],
    *,
    style: PromptStyle,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, DomainScore]:
    """Scores per domain, in the order of `eval_sets`."""
    return {
        domain: score_questions(
            model, tokenizer, questions, style=style, samples=samples, temperature=temperature,
            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, on_batch=on_batch,
        )
        for domain, questions in eval_sets.items()
    }


def evaluate_greedy(model_dir: Path, eval_sets: Mapping[str, Sequence[Question]], evaluation: EvalConfig,
                    style: PromptStyle, progress: ProgressSink, description: str,
                    cache: Path | None = None) -> dict[str, DomainScore]:
    """Held-out greedy pass@1 per domain of the model in `model_dir` (a run's before/after phases).
    With `cache`, the scores are read from that JSON file if it exists, else written there."""
    if not eval_sets:  # no such split (no validation set): nothing to evaluate
        return {}
    if cache is not None and cache.is_file():
        return {d: DomainScore(**s) for d, s in json.loads(cache.read_text()).items()}
    from fedgrpo.models.load import load_model

    model, tokenizer = load_model(model_dir)
    with progress.phase(description, sum(len(v) for v in eval_sets.values())) as advance:
        scores = evaluate_model(model, tokenizer, eval_sets, style=style, samples=0, temperature=1.0,
                                max_new_tokens=evaluation.max_new_tokens, batch_size=evaluation.eval_batch_size,
                                seed=0, on_batch=advance)
    if cache is not None:
        write_json_atomic(cache, {d: s.to_dict() for d, s in scores.items()})
    return scores


def mean_over_domains(scores: Mapping[str, DomainScore], attr: str = "pass_at_1") -> float | None:
    values = [getattr(s, attr) for s in scores.values() if getattr(s, attr) is not None]
    return sum(values) / len(values) if values else None


def _mean(values: Sequence[bool | float]) -> float:
    return float(sum(values)) / len(values) if values else 0.0
