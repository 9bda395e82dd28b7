r"""Prompt styles and their answer extractors: how a question is put to a model, and how its final
answer is read back.

Two styles (config `prompt_style`), one answer format each (config `answer_format`):

- ``prefill`` (the tiny models' default): the prompt is the question and an opened ``<answer>`` tag,
  and a completion is the final answer followed by ``</answer>``. Pre-filling the tag keeps
  completions short (what a tiny character model can learn in minutes) while staying the tag
  layout reasoning-gym and the paper's code use, so a format reward can check it.
- ``chat`` (real models): the tokenizer's chat template over a system prompt that asks for
  reasoning, then a final answer, and the question as the user turn. With ``answer_format`` tags
  the answer is ``<think>...</think><answer>...</answer>`` (the paper's code), with ``boxed`` the
  last ``\boxed{...}`` (MATH). The format reward checks that layout; the tag count reward (tags
  only) gives 0.25 per tag present exactly once, as the paper's code does.

    >>> render_prompt("Calculate 2 + 3.")
    'Calculate 2 + 3.\n<answer>'
    >>> extract_answer(" 5 </answer>")
    '5'
    >>> extract_answer("<answer>7</answer> oops, <answer>8</answer>")
    '8'
    >>> extract_answer("5") is None   # never closed: not a final answer
    True
    >>> extract_boxed("so $x = \\boxed{\\frac{1}{2}}$.")
    '\\frac{1}{2}'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fedgrpo.config import PromptConfig

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


# --- \boxed{} answers and the chat style ----------------------------------------------------------

BOXED = "\\boxed{"

THINK_THEN_TAGS = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)

SYSTEM_PROMPTS = {
    "tags": ("A conversation between User and Assistant. The User asks a question and the Assistant solves it. "
             "The Assistant first thinks about the reasoning process and then gives the final answer. The "
             "reasoning and the answer are enclosed in <think> </think> and <answer> </answer> tags: "
             "<think> reasoning here </think><answer> answer here </answer>"),
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
}


def extract_boxed(completion: str | None) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces allowed), or None when there is none
    or it is never closed."""
    if not completion:
        return None
    start = completion.rfind(BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(BOXED)
    while i < len(completion):
        depth += {"{": 1, "}": -1}.get(completion[i], 0)
        if depth == 0:
            answer = completion[start + len(BOXED):i].strip()
            return answer or None
        i += 1
    return None


def tag_count(completion: str | None) -> float:
    """The paper's tag count reward: 0.25 for each of <think>, </think>, <answer>, </answer> that
    appears exactly once."""
    text = completion or ""
    return sum(0.25 for tag in ("<think>", "</think>", OPEN_TAG, CLOSE_TAG) if text.count(tag) == 1)


@dataclass(frozen=True)
class PromptStyle:
    """How a question is put to a model and its answer read back (module docstring)."""

    style: str  # prefill | chat
    answer_format: str  # tags | boxed (chat only; prefill is always tags)
    system_prompt: str | None  # chat: None = the format's default (SYSTEM_PROMPTS)

    @classmethod
    def from_config(cls, prompts: PromptConfig) -> PromptStyle:
        return cls(prompts.prompt_style, prompts.answer_format, prompts.system_prompt)

    def prompt(self, question: str) -> str | list[dict[str, str]]:
        """What a model is given: text (prefill) or chat messages, which the model's chat template
        renders (TRL's conversational prompts, and `models.generate`)."""
        if self.style == "prefill":
            return render_prompt(question)
        system = self.system_prompt if self.system_prompt is not None else SYSTEM_PROMPTS[self.answer_format]
        return [{"role": "system", "content": system}, {"role": "user", "content": question.strip()}]

    def extract(self, completion: Any) -> str | None:
        """The final answer in a completion (text, or TRL's conversational [{"role", "content"}])."""
        text = completion_text(completion)
        if self.style == "chat" and self.answer_format == "boxed":
            return extract_boxed(text)
        return extract_answer(text)

    def format_reward(self, completion: Any) -> float:
        """1 when the completion has the style's layout, else 0."""
        text = completion_text(completion)
        if self.style == "prefill":
            return 1.0 if is_well_formed(text) else 0.0
        if self.answer_format == "boxed":
            return 1.0 if text.count(BOXED) == 1 and extract_boxed(text) is not None else 0.0
        return 1.0 if THINK_THEN_TAGS.match(text) else 0.0

    def tag_reward(self, completion: Any) -> float:
        """The tag count reward (chat with tags only; 0 otherwise)."""
        if self.style != "chat" or self.answer_format != "tags":
            return 0.0
        return tag_count(completion_text(completion))

    def target(self, answer: str, solution: str | None = None) -> str:
        """The supervised completion for a labelled item: the answer (prefill), or the worked
        `solution` (when given) and the answer in the style's layout (chat)."""
        if self.style == "prefill":
            return render_completion(answer)
        reasoning = (solution or "").strip()
        if self.answer_format == "boxed":
            final = f"The final answer is $\\boxed{{{answer.strip()}}}$."
            return f"{reasoning}\n\n{final}" if reasoning else final
        return f"<think>\n{reasoning}\n</think>\n<answer>\n{answer.strip()}\n</answer>"


PREFILL = PromptStyle("prefill", "tags", None)  # the tiny models' style


def completion_text(completion: Any) -> str:
    """A completion as text (TRL passes conversational completions as [{"role": "assistant",
    "content": ...}])."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return "" if completion is None else str(completion)
