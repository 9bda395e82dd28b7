"""The user's own data files (data/files.py) and the splits built from them: every format, the
column names, and a one-line error naming the file, the row and the fix for what does not load."""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter

import pytest

from fedgrpo.config import load_config
from fedgrpo.data.files import Columns, load_questions
from fedgrpo.data.grading import MATH_VERIFY
from fedgrpo.data.gym import is_correct, iter_unique_questions, resolve_domain
from fedgrpo.data.partition import build_splits, split_among_clients
from fedgrpo.errors import ConfigError

ROWS = [
    {"problem": "What is $1+1$?", "solution": "One and one make $\\boxed{2}$.", "answer": "2", "subject": "Algebra"},
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "solution": "$\\frac{3}{4}$", "answer": "\\frac{3}{4}",
     "subject": "Prealgebra"},
    {"problem": "How many primes are below 10?", "solution": "2, 3, 5, 7.", "answer": "4", "subject": "Number Theory"},
]
MATH = Columns(question="problem", answer="answer", domain="subject", solution="solution")


def write(path, rows=ROWS):
    """`rows` in the format `path`'s name asks for (a folder name without a suffix: save_to_disk)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["math.jsonl", "math.json", "math.csv", "math.parquet", "math_saved"])
def test_every_format_loads_the_same_questions(tmp_path, name):
    questions = load_questions(write(tmp_path / name), MATH, role="training pool", need_answer=True)
    assert [q.question for q in questions] == [r["problem"] for r in ROWS]
    assert [q.domain for q in questions] == ["Algebra", "Prealgebra", "Number Theory"]
    assert questions[0].metadata["solution"].startswith("One and one")
    # Free-form answers are graded by math-verify: another notation of the same value is right.
    assert all(q.generator == MATH_VERIFY for q in questions)
    assert is_correct(questions[1], "0.75") and is_correct(questions[1], "\\frac{6}{8}")
    assert not is_correct(questions[1], "\\frac{1}{2}")


def test_the_pool_may_come_without_answers_but_labelled_roles_may_not(tmp_path):
    unlabelled = write(tmp_path / "pool.jsonl", [{"problem": r["problem"]} for r in ROWS])
    assert all(q.answer is None for q in load_questions(unlabelled, MATH, role="training pool", need_answer=False))
    with pytest.raises(ConfigError) as err:
        load_questions(unlabelled, MATH, role="auxiliary set", need_answer=True)
    assert str(err.value) == ("auxiliary set file pool.jsonl, line 1: no 'answer'; this role needs the reference "
                              "answer of every row (set answer_column if it is called otherwise)")


@pytest.mark.parametrize(("rows", "where", "message"), [
    ([{"question": "x", "answer": "1"}, {"answer": "1"}], "line 2", "no 'question'"),
    ([{"question": "x", "answer": "1", "generator": "no_such_thing"}], "line 1", "no generator 'no_such_thing'"),
    ([5], "line 1", "expected an object"),
])
def test_a_bad_row_names_the_file_the_row_and_the_fix(tmp_path, rows, where, message):
    path = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(ConfigError, match=message) as err:
        load_questions(path, Columns(), role="client-0 data", need_answer=True)
    assert f"client-0 data file d.jsonl, {where}" in str(err.value) and "\n" not in str(err.value)


def test_a_bad_csv_row_is_named_by_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nWhat is 1+1?,2\nWhat is 2+2?,\n")
    with pytest.raises(ConfigError, match="d.csv, row 3: no 'answer'"):
        load_questions(path, Columns(), role="evaluation set 'x'", need_answer=True)


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_questions(tmp_path / "nope.jsonl", Columns(), role="auxiliary set", need_answer=True)
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"question": "x", "answer": 1}\n{oops\n')
    with pytest.raises(ConfigError, match="b.jsonl line 2 is not a JSON object"):
        load_questions(broken, Columns(), role="auxiliary set", need_answer=True)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="holds no rows"):
        load_questions(tmp_path / "e.jsonl", Columns(), role="auxiliary set", need_answer=True)
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ConfigError, match="unknown file type '.txt'"):
        load_questions(tmp_path / "t.txt", Columns(), role="auxiliary set", need_answer=True)
    (tmp_path / "p.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        load_questions(tmp_path / "p.parquet", Columns(), role="auxiliary set", need_answer=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="not a saved dataset"):
        load_questions(tmp_path / "folder", Columns(), role="auxiliary set", need_answer=True)


def test_a_saved_dataset_dict_asks_for_one_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match="several splits; give one of them: dd/train, dd/test"):
        load_questions(tmp_path / "dd", MATH, role="training pool", need_answer=False)


# --- a site's private data (`fedgrpo expert serve --data`) -------------------------------------------

def test_a_sites_rows_of_a_built_in_domain_use_its_verifier_and_the_generated_ids(tmp_path):
    # The answer-based gate matches by id first: an own copy of a generated question must share its id.
    generated = list(itertools.islice(iter_unique_questions(resolve_domain("spelling"), 0, 3), 2))
    path = write(tmp_path / "d.jsonl", [{"question": q.question, "answer": q.answer} for q in generated])
    loaded = load_questions(path, Columns(), role="private data", need_answer=True, default_domain="spelling")
    assert [q.question_id for q in loaded] == [q.question_id for q in generated]
    assert {q.generator for q in loaded} == {"spell_backward"}


def test_per_row_fields_and_repeats(tmp_path):
    row = {"question": "What is 7 * 6?", "answer": "42", "generator": "products", "domain": "shop", "question_id": "q-1"}
    [q] = load_questions(write(tmp_path / "d.json", [row, row]), Columns(), role="private data", need_answer=True)
    assert (q.question_id, q.domain, q.generator) == ("q-1", "shop", "products")


# --- splits from files ----------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    rows = [{**r, "problem": f"{r['problem']} (variant {i})"} for i in range(6) for r in ROWS]
    paths = {name: write(tmp_path / name, rows) for name in ("pool.jsonl", "aux.csv", "math500.parquet",
                                                               "clients.jsonl", "c0.jsonl", "c1.jsonl")}
    return {k.split(".")[0]: str(v) for k, v in paths.items()}


COLUMNS = {"question_column": "problem", "domain_column": "subject"}


def test_splits_from_files_keep_every_role_and_name_the_eval_sets(files):
    config = load_config(overrides={**COLUMNS, "pool_file": files["pool"], "aux_file": files["aux"],
                                    "eval_files": (f"MATH500={files['math500']}", files["aux"]),
                                    "client_files": (files["c0"], files["c1"])})
    splits = build_splits(config.data)
    assert len(splits.pool) == len(splits.aux) == 18 and splits.public == ()
    assert list(splits.eval) == ["MATH500", "aux"]  # NAME=PATH, or named after the file
    assert [s.expert_id for s in splits.clients] == ["client-0", "client-1"] and config.data.clients == 2
    assert all(q.answer is None for q in splits.server_training_pool(False))


def test_one_client_file_is_split_by_subject(files):
    config = load_config(overrides={**COLUMNS, "pool_file": files["pool"], "aux_file": files["aux"],
                                    "eval_files": (files["math500"],), "client_data_file": files["clients"],
                                    "num_clients": 3, "partition": "domain"})
    shards = build_splits(config.data).clients
    # Three subjects, three clients: one subject each, all of its items.
    assert [sorted(Counter(q.domain for q in s.questions)) for s in shards] == [
        ["Algebra"], ["Number Theory"], ["Prealgebra"]]


@pytest.mark.parametrize("partition", ["domain", "iid", "dirichlet"])
def test_splitting_among_clients_keeps_every_item_once_and_is_deterministic(files, partition):
    items = load_questions(files["clients"], MATH, role="client data", need_answer=True)
    shards = split_among_clients(items, 4, partition, 0.5, seed=3)
    assert sorted(q.question_id for s in shards for q in s) == sorted(q.question_id for q in items)
    assert shards == split_among_clients(items, 4, partition, 0.5, seed=3)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"aux_file": "AUX"}, "aux_file given without pool_file"),
    ({"pool_file": "POOL"}, "pool_file needs aux_file, eval_files, client_files or client_data_file as well"),
    ({"pool_file": "POOL", "aux_file": "AUX", "eval_files": ("AUX",), "client_files": ("AUX",),
      "client_data_file": "AUX"}, "not both"),
    ({"pool_file": "POOL", "aux_file": "AUX", "eval_files": ("AUX",), "client_data_file": "AUX"},
     "client_data_file needs num_clients"),
    ({"pool_file": "POOL", "aux_file": "nope.csv", "eval_files": ("AUX",), "client_files": ("AUX",)},
     "aux_file: 'nope.csv' does not exist"),
    ({"pool_file": "POOL", "aux_file": "AUX", "eval_files": ("x=AUX", "x=POOL"), "client_files": ("AUX", "POOL")},
     "two evaluation sets are named alike"),
])
def test_file_settings_name_their_fix(files, overrides, message):
    values = {k: (tuple(x.replace("AUX", files["aux"]).replace("POOL", files["pool"]) for x in v)
                  if isinstance(v, tuple) else v.replace("AUX", files["aux"]).replace("POOL", files["pool"]))
              for k, v in overrides.items()}
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=values)


def _own_pool(tmp_path):
    return str(write(tmp_path / "own-pool.jsonl", [{**r, "problem": f"{r['problem']} (pool {i})"}
                                                    for i in range(6) for r in ROWS]))


def test_a_validation_share_is_held_out_of_each_evaluation_file(files, tmp_path):
    config = load_config(overrides={**COLUMNS, "pool_file": _own_pool(tmp_path), "aux_file": files["aux"],
                                    "eval_files": (f"MATH500={files['math500']}",), "client_files": (files["c0"], files["c1"]),
                                    "val_fraction": 0.25})
    splits = build_splits(config.data)
    test, val = splits.eval["MATH500"], splits.val["MATH500"]
    assert len(val) == round(0.25 * 18) and len(test) + len(val) == 18
    assert not {q.question_id for q in test} & {q.question_id for q in val}
    assert build_splits(config.data).val == splits.val  # a seeded draw: the same every time


def test_validation_files_must_not_share_a_question_with_the_test_set(files, tmp_path):
    rows = [{**r, "problem": f"{r['problem']} (held out {i})"} for i in range(3) for r in ROWS]
    val = write(tmp_path / "val.jsonl", rows)
    base = {**COLUMNS, "pool_file": _own_pool(tmp_path), "aux_file": files["aux"], "eval_files": (f"m={files['math500']}",),
            "client_files": (files["c0"], files["c1"])}
    splits = build_splits(load_config(overrides={**base, "val_files": (f"m={val}",)}).data)
    assert len(splits.val["m"]) == 9 and len(splits.eval["m"]) == 18
    with pytest.raises(ConfigError, match="is in both the evaluation set 'm' and the validation set 'm'"):
        build_splits(load_config(overrides={**base, "val_files": (f"m={files['math500']}",)}).data)
    with pytest.raises(ConfigError, match="is in both the training pool and the validation set 'm'"):
        build_splits(load_config(overrides={**base, "pool_file": str(val), "val_files": (f"m={val}",)}).data)
    with pytest.raises(ConfigError, match="one validation set per evaluation set"):
        load_config(overrides={**base, "val_files": (f"other={val}",)})
    with pytest.raises(ConfigError, match="not both"):
        load_config(overrides={**base, "val_files": (f"m={val}",), "val_fraction": 0.2})


def test_a_probe_file_gives_the_recheck_labelled_probes_in_no_other_role(files, tmp_path):
    probes = write(tmp_path / "probes.jsonl", [{**r, "problem": f"{r['problem']} (probe {i})"}
                                               for i in range(4) for r in ROWS])
    base = {**COLUMNS, "pool_file": _own_pool(tmp_path), "aux_file": files["aux"], "eval_files": (f"m={files['math500']}",),
            "client_files": (files["c0"], files["c1"])}
    splits = build_splits(load_config(overrides={**base, "probe_file": str(probes), "probe_share": 0.2}).data)
    assert len(splits.probe) == 12 and all(q.answer is not None for q in splits.probe)
    # 6 training questions per subject: ceil(0.2 x 6 / 0.8) = 2 probes of each subject mixed in.
    assert Counter(q.domain for q in splits.probe_sample(0.2)) == {"Algebra": 2, "Prealgebra": 2, "Number Theory": 2}
    # A probe an expert saw in another role could be told apart: refused, naming both roles.
    with pytest.raises(ConfigError, match="is in both the auxiliary set and the probe set"):
        build_splits(load_config(overrides={**base, "probe_file": files["aux"]}).data)
    with pytest.raises(ConfigError, match="needs labelled probes: give probe_file"):
        load_config(overrides={**base, "probe_share": 0.1})
