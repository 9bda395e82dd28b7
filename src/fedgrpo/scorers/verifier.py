"""Answer comparison on the client: the domain's own verifier, with math-verify as a second opinion.

Both scorers use :func:`answers_agree`: answer-based scoring compares a candidate with a trusted
label, model-based scoring compares it with the expert model's own answer. Agreement is binary, as
in the paper (reasoning-gym's partial credit is not agreement).
"""

from __future__ import annotations

from fedgrpo.data.grading import math_equivalent
from fedgrpo.data.gym import is_correct
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question


def answers_agree(generator: str, question: str, candidate: str | None, reference: str | None) -> bool:
    """True when the candidate's answer equals the reference by the generator's verifier or, for
    answers in another notation ('5.0' vs '5', '1/2' vs '0.5'), by math-verify."""
    if candidate is None or reference is None:
        return False
    probe = Question("", "", generator, question, reference)
    if is_correct(probe, candidate):
        return True
    return math_equivalent(reference, candidate)


def score_against(generator: str, question: str, completion: str, reference: str | None,
                  style: PromptStyle) -> float:
    """1.0 when the completion's final answer (read in `style`) agrees with `reference`, else 0.0."""
    return 1.0 if answers_agree(generator, question, style.extract(completion), reference) else 0.0
