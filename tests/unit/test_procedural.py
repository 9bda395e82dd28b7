"""Our own procedural generators (fedgrpo.data.procedural): determinism, the verifier, the size of the
item space, and the `products` domain built on them working at the default split sizes."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from fedgrpo import load_config
from fedgrpo.data import gym
from fedgrpo.data.gym import is_correct, iter_unique_questions, resolve_domain
from fedgrpo.data.partition import build_splits
from fedgrpo.data.procedural import MultiplicationDataset, create_dataset


def test_items_are_deterministic_and_independent_of_the_dataset_size():
    a = create_dataset("multiplication", seed=3, size=50)
    b = create_dataset("multiplication", seed=3, size=500)
    assert [a[i] for i in range(50)] == [b[i] for i in range(50)]
    c = create_dataset("multiplication", seed=4, size=50)
    assert [a[i]["question"] for i in range(50)] != [c[i]["question"] for i in range(50)]


def test_items_follow_the_level_config_and_their_answers_are_the_products():
    ds = create_dataset("multiplication", seed=0, size=2000, min_digits=2, max_digits=3)
    for i in range(len(ds)):
        item = ds[i]
        a, b = item["metadata"]["factors"]
        assert item["question"] == f"Multiply {a} by {b}."
        assert item["answer"] == str(a * b)
        assert 10 <= a <= 999 and 2 <= b <= 9
    with pytest.raises(IndexError):
        ds[2000]


def test_the_verifier_accepts_the_exact_integer_only():
    entry = {"question": "Multiply 347 by 6.", "answer": "2082"}
    score = MultiplicationDataset.score_answer
    assert score("2082", entry) == 1.0
    assert score(" 2082 ", entry) == 1.0
    for wrong in ("2083", "208", "12082", "2082.5", "two thousand", "", None):
        assert score(wrong, entry) == 0.0


def test_the_products_domain_scores_through_the_gym_adapter():
    q = next(iter_unique_questions(resolve_domain("products"), 0, 0))
    assert q.generator == "multiplication"
    assert is_correct(q, q.answer)
    assert not is_correct(q, str(int(q.answer) + 1))
    assert not is_correct(q, "x")


def test_products_level_0_has_thousands_of_distinct_questions():
    texts = [q.question for q in islice(iter_unique_questions(resolve_domain("products"), 0, 0), 7000)]
    assert len(set(texts)) == 7000


def test_every_built_in_domain_fills_the_default_splits_without_overlap():
    # Issue 10: `--domains counting products ...` used to be refused at the default sizes.
    config = load_config(overrides={"domains": ",".join(gym.known_domain_names())})
    splits = build_splits(config.data)
    roles = splits.all_question_ids()
    ids = Counter(i for role in roles.values() for i in role)
    assert [i for i, n in ids.items() if n > 1] == []
    d = config.data
    for name in gym.known_domain_names():
        assert len(splits.eval[name]) == d.eval_size
        assert sum(q.domain == name for q in splits.public) == d.public_size
