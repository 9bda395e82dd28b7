"""Procedural generators of our own, for skills reasoning-gym has no small enough form of.

They follow reasoning-gym's dataset protocol, so `fedgrpo.data.gym` treats them like its generators:
``dataset[i]`` is a dict with ``question``, ``answer`` and ``metadata``, item ``i`` is drawn from
``random.Random(seed + i)`` (deterministic, independent of the dataset size), and
``dataset.score_answer(answer, entry)`` gives a score in [0, 1].

- ``multiplication``: a 2-3 digit number times a one-digit number at level 0 (7,920 distinct
  questions). reasoning-gym's ``products`` draws one digit count for both factors: its 1-digit level has
  only 100 distinct questions (too few for the default splits) and its 2-digit level multiplies two
  2-digit numbers, which a tiny model does not learn in minutes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MultiplicationConfig:
    min_digits: int = 2  # digits of the first factor
    max_digits: int = 3
    min_multiplier: int = 2  # range of the second factor
    max_multiplier: int = 9

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError("need 1 <= min_digits <= max_digits")
        if not 0 <= self.min_multiplier <= self.max_multiplier:
            raise ValueError("need 0 <= min_multiplier <= max_multiplier")


class MultiplicationDataset:
    """``Multiply 347 by 6.`` -> ``2082``."""

    def __init__(self, seed: int, size: int, **config: Any) -> None:
        self.config = MultiplicationConfig(**config)
        self.seed, self.size = seed, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        c = self.config
        rng = random.Random(self.seed + index)
        digits = rng.randint(c.min_digits, c.max_digits)
        a = rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)
        b = rng.randint(c.min_multiplier, c.max_multiplier)
        return {
            "question": f"Multiply {a} by {b}.",
            "answer": str(a * b),
            "metadata": {"source_dataset": "multiplication", "factors": [a, b], "digits": digits},
        }

    @staticmethod
    def score_answer(answer: str | None, entry: Mapping[str, Any]) -> float:
        """1.0 for the exact integer (surrounding spaces allowed), else 0.0."""
        if answer is None:
            return 0.0
        try:
            return 1.0 if int(answer.strip()) == int(entry["answer"]) else 0.0
        except ValueError:
            return 0.0


GENERATORS: dict[str, type] = {"multiplication": MultiplicationDataset}


def create_dataset(name: str, *, seed: int, size: int, **config: Any) -> Any:
    return GENERATORS[name](seed=seed, size=size, **config)
