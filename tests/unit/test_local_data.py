"""A site's own private data file: what loads, and the one-line errors for what does not."""

from __future__ import annotations

import itertools
import json

import pytest

from fedgrpo.data.gym import iter_unique_questions, resolve_domain
from fedgrpo.data.local import load_private_data
from fedgrpo.errors import ConfigError


def write_lines(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_json_lines_load_with_defaults_from_the_domain(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"question": "Calculate 2 + 3.", "answer": 5}])
    [q] = load_private_data(path, "arithmetic")
    assert (q.domain, q.generator, q.question, q.answer) == ("arithmetic", "basic_arithmetic", "Calculate 2 + 3.", "5")


def test_a_question_the_server_also_holds_gets_the_same_id(tmp_path):
    # The answer-based gate matches by id first: an own copy of a generated question must share its id.
    generated = list(itertools.islice(iter_unique_questions(resolve_domain("spelling"), 0, 3), 2))
    path = write_lines(tmp_path / "d.jsonl", [{"question": q.question, "answer": q.answer} for q in generated])
    loaded = load_private_data(path, "spelling")
    assert [q.question_id for q in loaded] == [q.question_id for q in generated]


def test_a_json_list_and_per_item_fields_work(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([
        {"question": "What is 7 * 6?", "answer": "42", "generator": "products", "domain": "shop",
         "question_id": "q-1"},
        {"question": "What is 7 * 6?", "answer": "42", "generator": "products", "domain": "shop",
         "question_id": "q-1"},  # a repeat is one item
    ]))
    [q] = load_private_data(path)
    assert (q.question_id, q.domain, q.generator) == ("q-1", "shop", "products")


@pytest.mark.parametrize(("records", "message"), [
    ([{"question": "x"}], "missing answer"),
    ([{"answer": "1"}], "missing question"),
    ([{"question": "x", "answer": "1", "domain": "shop"}], "needs a \"generator\""),
    ([{"question": "x", "answer": "1", "generator": "no_such_thing"}], "no generator 'no_such_thing'"),
    ([5], "expected an object"),
])
def test_bad_records_name_the_line_and_the_fix(tmp_path, records, message):
    path = write_lines(tmp_path / "d.jsonl", records)
    with pytest.raises(ConfigError, match=message) as err:
        load_private_data(path, None if "domain" in str(records[0]) else "arithmetic")
    assert "d.jsonl:line 1" in str(err.value) and "\n" not in str(err.value)


def test_no_domain_anywhere_is_refused(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"question": "x", "answer": "1"}])
    with pytest.raises(ConfigError, match="--domain"):
        load_private_data(path)


def test_a_missing_or_broken_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_private_data(tmp_path / "nope.jsonl", "arithmetic")
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"question": "x", "answer": 1}\n{oops\n')
    with pytest.raises(ConfigError, match="line 2 is not a JSON object"):
        load_private_data(broken, "arithmetic")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no questions"):
        load_private_data(empty, "arithmetic")
