"""Questions from the user's own files, for any role: the server's training pool, the auxiliary set,
named evaluation sets and the clients' private data.

Formats, chosen by the path: JSON Lines (``.jsonl``) or a JSON list (``.json``) of objects, CSV
(``.csv``, a header row), Parquet (``.parquet``), or a folder written by ``datasets``'
``save_to_disk``. Columns (names configurable, config `question_column` and the rest):

| column | needed | meaning |
|---|---|---|
| question | always | the question text |
| answer | aux, eval and client data; optional in the pool | the reference answer (MATH: what `\\boxed{}` holds) |
| domain | optional | the item's domain or subject: routing reports, the Dirichlet partition; default: the file's name |
| solution | optional | a worked solution: the supervised target of expert fine-tuning (chat style) |

A ``generator`` column may name the reasoning-gym verifier of a row; without it a row of a built-in
domain (a site's share of the generated federation) uses that domain's verifier, and any other row
is graded by math-verify (`data.grading`, generator ``math``). A ``question_id`` column may give ids;
by default they derive from domain and text, as for generated questions, so a question the server
also holds is recognised (the answer-based gate). A repeated question is one item. A bad file or
row raises a one-line `ConfigError` naming the file, the row and the fix.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.config import DataConfig
from fedgrpo.data.grading import MATH_VERIFY
from fedgrpo.data.gym import CUSTOM_PREFIX, DOMAINS, resolve_domain
from fedgrpo.data.tasks import Question, make_question_id
from fedgrpo.errors import ConfigError

FORMATS = ".jsonl, .json, .csv, .parquet or a datasets save_to_disk folder"


@dataclass(frozen=True)
class Columns:
    """Which column holds what (config `question_column`, `answer_column`, `domain_column`,
    `solution_column`)."""

    question: str = "question"
    answer: str = "answer"
    domain: str = "domain"
    solution: str = "solution"

    @classmethod
    def from_config(cls, data: DataConfig) -> Columns:
        return cls(data.question_column, data.answer_column, data.domain_column, data.solution_column)


def load_questions(path: str | Path, columns: Columns, *, role: str, need_answer: bool,
                   default_domain: str | None = None) -> list[Question]:
    """The questions in `path` for `role` (named in errors: "training pool", "auxiliary set", ...).

    `need_answer`: every row must have an answer (a labelled role). A row without a domain gets
    `default_domain`, else the file's name. Solutions, when present, ride in `metadata["solution"]`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{role} file {str(path)!r} does not exist; check the path ({FORMATS})")
    fallback_domain = default_domain or path.stem
    questions: list[Question] = []
    seen: set[str] = set()
    for where, row in read_rows(path):
        q = _question(row, columns, need_answer, fallback_domain, f"{role} file {path.name}, {where}")
        if q.question_id not in seen:
            seen.add(q.question_id)
            questions.append(q)
    if not questions:
        raise ConfigError(f"{role} file {str(path)!r} holds no rows; give at least one question")
    return questions


def read_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, row) for every row of a supported file; `where` names the row for errors."""
    if path.is_dir():
        yield from _saved_dataset_rows(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            yield from ((f"row {i}", row) for i, row in enumerate(csv.DictReader(fh), 2))  # 1 is the header
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise ConfigError(f"{path.name}: unknown file type {suffix or '(none)'!r}; use {FORMATS}")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name} line {lineno} is not a JSON object ({exc.msg}); write one "
                              "object per line") from None


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno}); fix it or "
                          "write JSON Lines (.jsonl)") from None
    if not isinstance(items, list):
        raise ConfigError(f"{path.name} must hold a JSON list of objects (or use .jsonl, one per line)")
    yield from ((f"item {i}", item) for i, item in enumerate(items, 1))


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ConfigError(f"{path.name} is not a readable Parquet file ({type(exc).__name__}); check it") from None
    yield from ((f"row {i}", row) for i, row in enumerate(table.to_pylist(), 1))


def _saved_dataset_rows(path: Path) -> Iterator[tuple[str, Any]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"{path.name} is a folder but not a saved dataset ({str(exc).splitlines()[0]}); "
                          f"give a folder written by save_to_disk, or a file ({FORMATS})") from None
    if isinstance(data, DatasetDict):
        splits = ", ".join(f"{path.name}/{name}" for name in data)
        raise ConfigError(f"{path.name} holds several splits; give one of them: {splits}")
    assert isinstance(data, Dataset)
    yield from ((f"row {i}", row) for i, row in enumerate(data, 1))


def _question(row: Any, columns: Columns, need_answer: bool, fallback_domain: str, where: str) -> Question:
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: expected an object with a {columns.question!r} field, got {type(row).__name__}")
    text = _text(row.get(columns.question))
    if not text:
        raise ConfigError(f"{where}: no {columns.question!r}; every row needs a question "
                          f"(set question_column if it is called otherwise)")
    answer = _text(row.get(columns.answer))
    if need_answer and not answer:
        raise ConfigError(f"{where}: no {columns.answer!r}; this role needs the reference answer of every "
                          f"row (set answer_column if it is called otherwise)")
    domain = _text(row.get(columns.domain)) or fallback_domain
    solution = _text(row.get(columns.solution))
    return Question(
        question_id=_text(row.get("question_id")) or make_question_id(domain, text),
        domain=domain,
        generator=_generator(_text(row.get("generator")), domain, where),
        question=text,
        answer=answer or None,
        metadata={"solution": solution} if solution else {},
    )


def _generator(named: str, domain: str, where: str) -> str:
    """The row's verifier: as named (checked), its built-in domain's, or math-verify."""
    if not named:
        return DOMAINS[domain].generators[0].name if domain in DOMAINS else MATH_VERIFY
    if named != MATH_VERIFY:
        try:
            resolve_domain(f"{CUSTOM_PREFIX}{named}")  # checks that the verifier exists
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return named


def _text(value: Any) -> str:
    """A cell as stripped text; None, NaN and empty cells are ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()
