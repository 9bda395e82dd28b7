"""reasoning-gym adapter: domains as generator families, seeded items, safe scoring.

A *domain* is a named list of reasoning-gym generators with one config per difficulty level. The built-in
levels start where a tiny character model learns something in minutes on a CPU (level 0) and grow
towards reasoning-gym's own defaults. Any single generator is also usable as a domain by writing
``rg:<generator>`` (its own default config, level 0 only).

Scoring always goes through :func:`score_answer`, which handles reasoning-gym's quirks: partial credit
(``'148'`` for ``'48'`` scores 0.667), scorers that raise on free text (prime_factorization), and
generators without a reference answer (excluded up front).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fedgrpo.data.grading import MATH_VERIFY, math_equivalent
from fedgrpo.data.tasks import Question, make_question_id
from fedgrpo.errors import ConfigError

# Generators graded by simulation: their items carry answer=None, so they cannot give a correctness
# reward or a calibration bit (flower-trl-notes.md §4, quirk 3).
NO_REFERENCE_ANSWER = frozenset(
    {"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"}
)
CUSTOM_PREFIX = "rg:"


@dataclass(frozen=True)
class GeneratorSpec:
    name: str
    levels: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str
    generators: tuple[GeneratorSpec, ...]

    @property
    def max_difficulty(self) -> int:
        return min(len(g.levels) for g in self.generators) - 1


DOMAINS: dict[str, DomainSpec] = {
    spec.name: spec
    for spec in (
        DomainSpec(
            "arithmetic",
            "add two integers (reasoning-gym basic_arithmetic)",
            (
                GeneratorSpec(
                    "basic_arithmetic",
                    (
                        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                         "operators": ("+",), "allow_parentheses": False, "allow_negation": False},
                        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                         "operators": ("+", "-"), "allow_parentheses": False, "allow_negation": False},
                        {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
                    ),
                ),
            ),
        ),
        DomainSpec(
            "sequences",
            "continue an integer sequence (reasoning-gym number_sequence)",
            (
                GeneratorSpec(
                    "number_sequence",
                    (
                        {"min_terms": 6, "max_terms": 8, "min_value": -20, "max_value": 20, "max_complexity": 1},
                        {"min_terms": 4, "max_terms": 8, "min_value": -50, "max_value": 50, "max_complexity": 2},
                        {},
                    ),
                ),
            ),
        ),
        DomainSpec(
            "algebra",
            "solve a linear equation for one variable (reasoning-gym simple_equations)",
            (
                GeneratorSpec(
                    "simple_equations",
                    (
                        {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 20,
                         "operators": ("+", "-"), "operators_weights": [0.5, 0.5]},
                        {"min_terms": 2, "max_terms": 3, "min_value": 1, "max_value": 10,
                         "operators": ("+", "-", "*"), "operators_weights": [0.4, 0.4, 0.2]},
                        {},
                    ),
                ),
            ),
        ),
        DomainSpec(
            "spelling",
            "spell a word backwards (reasoning-gym spell_backward)",
            (
                GeneratorSpec(
                    "spell_backward",
                    (
                        {"min_word_len": 5, "max_word_len": 8},
                        {"min_word_len": 6, "max_word_len": 10},
                        {},
                    ),
                ),
            ),
        ),
        DomainSpec(
            "counting",
            "count a letter in a short text (reasoning-gym letter_counting)",
            (
                GeneratorSpec(
                    "letter_counting",
                    ({"min_words": 3, "max_words": 4}, {"min_words": 5, "max_words": 7}, {}),
                ),
            ),
        ),
        DomainSpec(
            "chains",
            "add and subtract a chain of integers (reasoning-gym chain_sum)",
            (
                GeneratorSpec(
                    "chain_sum",
                    ({"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
                     {"min_terms": 3, "max_terms": 4, "min_digits": 1, "max_digits": 2}, {}),
                ),
            ),
        ),
        DomainSpec(
            "gcd",
            "greatest common divisor of two integers (reasoning-gym gcd)",
            (
                GeneratorSpec(
                    "gcd",
                    ({"min_value": 1, "max_value": 100}, {"min_value": 1, "max_value": 1000},
                     {"min_numbers": 2, "max_numbers": 3, "min_value": 1, "max_value": 1000}),
                ),
            ),
        ),
        DomainSpec(
            "products",
            "multiply a number by a one-digit number (our own generator: reasoning-gym's products has "
            "too few small items)",
            (
                GeneratorSpec(
                    "multiplication",
                    ({"min_digits": 2, "max_digits": 3}, {"min_digits": 2, "max_digits": 4},
                     {"min_digits": 2, "max_digits": 3, "min_multiplier": 11, "max_multiplier": 99}),
                ),
            ),
        ),
    )
}


def known_domain_names() -> list[str]:
    return sorted(DOMAINS)


def resolve_domain(name: str) -> DomainSpec:
    """Return the spec of a built-in domain or of ``rg:<generator>``; raise ConfigError otherwise."""
    if name in DOMAINS:
        return DOMAINS[name]
    if name.startswith(CUSTOM_PREFIX):
        generator = name[len(CUSTOM_PREFIX):]
        if generator in NO_REFERENCE_ANSWER:
            raise ConfigError(
                f"domain {name!r}: reasoning-gym's {generator} has no reference answers; "
                "choose a generator that has one"
            )
        if generator not in _registered_generators():
            raise ConfigError(
                f"domain {name!r}: reasoning-gym has no generator {generator!r}; "
                "list them with `fedgrpo domains --all`"
            )
        return DomainSpec(name, f"reasoning-gym {generator}, default config", (GeneratorSpec(generator, ({},)),))
    raise ConfigError(
        f"unknown domain {name!r}: use one of {', '.join(known_domain_names())} "
        f"or rg:<generator> for any reasoning-gym generator"
    )


def check_domains(names: tuple[str, ...] | list[str], difficulty: int) -> list[DomainSpec]:
    """Resolve every domain name and check it has level `difficulty`; ConfigError names the fix."""
    specs = [resolve_domain(name) for name in names]
    for spec in specs:
        if difficulty > spec.max_difficulty:
            raise ConfigError(
                f"difficulty {difficulty} is above domain {spec.name!r}'s highest level "
                f"({spec.max_difficulty}); lower difficulty"
            )
    return specs


@functools.cache
def _registered_generators() -> frozenset[str]:
    from reasoning_gym.factory import DATASETS

    return frozenset(DATASETS) - {"composite"}


@functools.lru_cache(maxsize=256)
def _dataset(generator: str, level_config: tuple[tuple[str, Any], ...], seed: int, size: int) -> Any:
    from fedgrpo.data import procedural

    if generator in procedural.GENERATORS:
        return procedural.create_dataset(generator, seed=seed, size=size, **dict(level_config))
    import reasoning_gym

    return reasoning_gym.create_dataset(generator, seed=seed, size=size, **dict(level_config))


def _freeze(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))


def iter_unique_questions(domain: DomainSpec, difficulty: int, seed: int) -> Iterator[Question]:
    """Yield the domain's items in a fixed seeded order, each distinct question text once.

    The generators of a domain are interleaved by a seeded choice per item. The stream is unbounded in
    principle; callers take what they need and treat an exhausted item space (a long run of repeats)
    as a configuration error.
    """
    if difficulty > domain.max_difficulty:
        raise ConfigError(
            f"difficulty {difficulty} is above the highest level of domain {domain.name!r} "
            f"({domain.max_difficulty}); lower `difficulty`"
        )
    chunk = 4096
    rng = random.Random(f"{domain.name}/{seed}")
    seen: set[str] = set()
    offsets = {g.name: 0 for g in domain.generators}
    repeats = 0
    while True:
        spec = rng.choice(domain.generators)
        index = offsets[spec.name]
        offsets[spec.name] += 1
        block, position = divmod(index, chunk)
        config = _freeze(spec.levels[difficulty])
        dataset = _dataset(spec.name, config, _block_seed(seed, domain.name, spec.name, block), chunk)
        entry = dataset[position]
        text = entry["question"]
        if entry.get("answer") is None or text in seen:
            repeats += 1
            if repeats > 20_000:
                return  # the item space is exhausted; the caller reports what it could not fill
            continue
        repeats = 0
        seen.add(text)
        yield Question(
            question_id=make_question_id(domain.name, text),
            domain=domain.name,
            generator=spec.name,
            question=text,
            answer=str(entry["answer"]),
            metadata=dict(entry.get("metadata", {})),
        )


def _block_seed(seed: int, domain: str, generator: str, block: int) -> int:
    """A stable, well-spread seed per block of items.

    Hashed, not counted: reasoning-gym seeds item i with Random(seed + i), so nearby seeds would give
    the same items shifted by one. Python's hash() is salted per process, hence sha256.
    """
    digest = hashlib.sha256(f"{seed}/{domain}/{generator}/{block}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def score_answer(question: Question, answer: str | None, gold: str | None = None) -> float:
    """The generator's own score in [0, 1] for an extracted answer; 0.0 for None or a raising scorer.

    `gold` replaces the question's answer (a client scoring against its own trusted answer). Some
    generators give partial credit: use :func:`is_correct` where a correctness bit is wanted.
    """
    reference = gold if gold is not None else question.answer
    if answer is None or reference is None:
        return 0.0
    if question.generator == MATH_VERIFY:  # a user's free-form item: no reasoning-gym verifier
        return 1.0 if answer.strip() == reference.strip() or math_equivalent(reference, answer) else 0.0
    dataset = _scoring_dataset(question.generator)
    entry = {"question": question.question, "answer": reference, "metadata": question.metadata}
    try:
        score = float(dataset.score_answer(answer, entry))
    except Exception:  # noqa: BLE001 - reasoning-gym scorers raise on free text (prime_factorization)
        return 0.0
    return min(max(score, 0.0), 1.0)


def is_correct(question: Question, answer: str | None, gold: str | None = None) -> bool:
    """Binarised correctness: only a full score counts (partial credit is not a right answer)."""
    return score_answer(question, answer, gold) == 1.0


@functools.cache
def _scoring_dataset(generator: str) -> Any:
    # score_answer reads only the entry and its metadata, never the dataset's own config, so one
    # instance per generator serves every difficulty level.
    return _dataset(generator, (), 0, 1)
