"""The question record shared by every split, scorer and message."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Question:
    """One generated reasoning item.

    `question_id` is derived from the domain and the question text, so the same text always has the
    same id (groups, graph lookups and messages are keyed by it, never by prompt text) and two splits
    can be checked for overlap by id alone. `answer` is None where it is withheld from the holder.
    `metadata` is reasoning-gym's per-item metadata, which some verifiers need.
    """

    question_id: str
    domain: str
    generator: str
    question: str
    answer: str | None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def without_answer(self) -> Question:
        return replace(self, answer=None)


def make_question_id(domain: str, question: str) -> str:
    digest = hashlib.sha1(question.encode("utf-8")).hexdigest()[:12]
    return f"{domain}-{digest}"
