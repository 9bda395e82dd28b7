"""A site's own private data, from a file it keeps (deployment: `fedgrpo expert serve --data FILE`).

The file is JSON Lines (one object per line) or a JSON list of objects, each with:

- ``question`` (text) and ``answer`` (the trusted answer, text or number): required;
- ``generator``: the reasoning-gym generator whose verifier compares answers (default: the first
  generator of the site's domain, for a built-in domain);
- ``domain``: default the site's ``--domain``;
- ``question_id``: default derived from domain and text, as for generated questions, so a question
  the server also holds is recognised by its text (the answer-based gate).

Nothing here leaves the site: the data only serves the site's scorer and the expert's fine-tuning.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedgrpo.data.gym import CUSTOM_PREFIX, resolve_domain
from fedgrpo.data.tasks import Question, make_question_id
from fedgrpo.errors import ConfigError


def load_private_data(path: str | Path, domain: str | None = None) -> list[Question]:
    """Questions with trusted answers from `path`; a bad file or record raises a one-line ConfigError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"private data file {str(path)!r} does not exist; give a JSON Lines file of "
                          "{\"question\": ..., \"answer\": ...} objects")
    questions = []
    seen: set[str] = set()
    for where, record in _records(path):
        q = _question(record, domain, f"{path.name}:{where}")
        if q.question_id not in seen:  # a repeated question is one item
            seen.add(q.question_id)
            questions.append(q)
    if not questions:
        raise ConfigError(f"private data file {str(path)!r} holds no questions")
    return questions


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                              "fix the file or write one object per line") from None
        yield from ((f"item {i}", item) for i, item in enumerate(items, 1))
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name} line {lineno} is not a JSON object ({exc.msg}); "
                              "write one {\"question\": ..., \"answer\": ...} object per line") from None


def _question(record: Any, default_domain: str | None, where: str) -> Question:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected an object with question and answer, got {type(record).__name__}")
    missing = [k for k in ("question", "answer") if record.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{where}: missing {' and '.join(missing)}; every item needs a question and "
                          "its trusted answer")
    domain = str(record.get("domain") or default_domain or "")
    if not domain:
        raise ConfigError(f"{where}: no domain; give the site's --domain or a \"domain\" field per item")
    generator = record.get("generator")
    if not generator:
        try:
            generator = resolve_domain(domain).generators[0].name
        except ConfigError:
            raise ConfigError(f"{where}: domain {domain!r} is not built in, so each item needs a "
                              "\"generator\" naming the reasoning-gym verifier to use") from None
    else:
        try:
            resolve_domain(f"{CUSTOM_PREFIX}{generator}")  # checks that the verifier exists
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    text = str(record["question"]).strip()
    return Question(
        question_id=str(record.get("question_id") or make_question_id(domain, text)),
        domain=domain,
        generator=str(generator),
        question=text,
        answer=str(record["answer"]).strip(),
    )
