"""The one prompt template and the one answer extractor.

Final-answer convention: the prompt ends with an opened ``<answer>`` tag, and a completion is the final
answer followed by ``</answer>``. Pre-filling the tag keeps completions short (what a tiny character
model can learn in minutes) while staying the tag layout reasoning-gym and the paper's code use, so a
format reward can check it and a real LLM continues it naturally.

    >>> render_prompt("Calculate 2 + 3.")
    'Calculate 2 + 3.\\n<answer>'
    >>> extract_answer(" 5 </answer>")
    '5'
    >>> extract_answer("<answer>7</answer> oops, <answer>8</answer>")
    '8'
    >>> extract_answer("5") is None   # never closed: not a final answer
    True
"""

from __future__ import annotations

import re

OPEN_TAG = "<answer>"
CLOSE_TAG = "</answer>"
PROMPT_TEMPLATE = "{question}\n" + OPEN_TAG

_TAGGED = re.compile(re.escape(OPEN_TAG) + r"(.*?)" + re.escape(CLOSE_TAG), re.DOTALL)


def render_prompt(question: str) -> str:
    """Return the prompt the policy sees for a question."""
    return PROMPT_TEMPLATE.format(question=question.strip())


def render_completion(answer: str) -> str:
    """Return the target completion for a gold answer (used for supervised pre-training)."""
    return f"{answer.strip()}{CLOSE_TAG}"


def extract_answer(completion: str | None) -> str | None:
    """Return the final answer in a completion, or None when it has none.

    A completion may re-open the tag itself (``<answer>x</answer>``, the last such pair wins, as in
    reasoning-gym) or continue the pre-filled one (``x</answer>``). Text after an unclosed tag is not a
    final answer: a truncated completion must not score. Empty answers are None.
    """
    if not completion:
        return None
    tagged = _TAGGED.findall(completion)
    if tagged:
        answer = tagged[-1]
    elif CLOSE_TAG in completion and OPEN_TAG not in completion:
        answer = completion.split(CLOSE_TAG, 1)[0]
    else:
        return None
    answer = answer.strip()
    return answer or None


def is_well_formed(completion: str | None) -> bool:
    """True when the completion closes the pre-filled tag once and adds nothing but whitespace after."""
    if not completion or completion.count(CLOSE_TAG) != 1 or OPEN_TAG in completion:
        return False
    head, tail = completion.split(CLOSE_TAG, 1)
    return bool(head.strip()) and not tail.strip()
