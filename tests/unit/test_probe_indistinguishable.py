"""Issue 21's acceptance test: an expert cannot tell the re-check's probes from real questions.

The run's own path up to the expert, without training: the generated splits (probes cut from the same
shuffled items as the pool, `data.partition`), the training questions with the probes mixed in
(`training.calibrate.training_questions`), each epoch shuffled as TRL's sampler shuffles, a policy
that samples candidates from the prompt alone, the server's reward hook (`training.reward`) and the
embedded transport's scoring session, up to what a client's expert reads: its resolved requests. On
them a logistic regression (numpy) with every feature an expert has (position in the request, the
request's size, question length, values per item (distinct answers), whether it saw the question
before, hashed character 3-grams of the text) is trained on one half of a balanced sample and tested
on the other: it must do no better than chance, within a binomial bound (z = 3.09, one-sided 0.1%).
The same classifier is shown to find a real leak (probes appended after the real items, as the old
re-check sent them), so the test can fail.

Run: pytest tests/unit/test_probe_indistinguishable.py
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from fedgrpo.config import load_config
from fedgrpo.data.partition import build_splits
from fedgrpo.data.prompts import PREFILL
from fedgrpo.training.calibrate import training_questions
from fedgrpo.training.reward import FederatedReward
from fedgrpo.training.trainer import group_by_question
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.types import Hello, Reads, ScoreReply

SHARE, GROUP, PROMPTS_PER_CALL, CALLS = 0.25, 8, 16, 90
Z_ONE_SIDED = 3.09  # P(Z > 3.09) = 0.001


class Recording:
    """A client's expert that keeps what it is sent (ANSWERS form, as the built-in scorers read)."""

    def __init__(self, expert_id, domain):
        self.expert_id, self.domain, self.requests = expert_id, domain, []

    def hello(self):
        return Hello(self.expert_id, self.domain, reads=Reads.ANSWERS)

    def score(self, request):
        self.requests.append(request)
        return ScoreReply(request.step, (0.0,) * request.num_candidates)


def _policy_samples(question, gold, call):
    """The policy's GROUP candidates for one prompt: right with a probability set by the text, else
    one of a few wrong answers. It reads the prompt only, as the real policy does."""
    seed = int.from_bytes(hashlib.sha256(f"{question}|{call}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    p_right = 0.2 + 0.6 * (zlib.crc32(question.encode()) % 1000) / 1000
    wrong = [f"{gold}{k}" for k in range(3)]
    return [f"{gold if rng.random() < p_right else wrong[rng.integers(3)]}</answer>" for _ in range(GROUP)]


@pytest.fixture(scope="module")
def seen_by_experts():
    """Every item each expert was sent, with its features as the expert can compute them, and
    whether it was a probe (the server's secret)."""
    config = load_config(overrides={"domains": ("arithmetic", "spelling"), "pool_size": 200, "aux_size": 8,
                                    "public_size": 10, "eval_size": 10, "val_size": 0, "client_size": 10,
                                    "probe_size": 40, "probe_share": SHARE})
    splits = build_splits(config.data)
    questions = training_questions(SimpleNamespace(config=config, splits=splits))
    probes = {q.question_id for q in splits.probe_sample(SHARE)}
    gold = {q.question_id: q.answer for q in (*splits.pool, *splits.probe)}
    experts = {"client-0": Recording("client-0", "arithmetic"), "client-1": Recording("client-1", "spelling")}
    routing = {q.question_id: (f"client-{0 if q.domain == 'arithmetic' else 1}",) for q in questions}
    hook = FederatedReward({q.question_id: q for q in questions}, routing,
                           EmbeddedTransport(experts, timeout_s=30, style=PREFILL), group_size=GROUP, style=PREFILL,
                           accuracy_weight=1.0, format_weight=0.0, tag_weight=0.0,
                           group_by_question=group_by_question, probes=frozenset(probes))
    rng = np.random.default_rng(0)
    order: list[int] = []
    for call in range(CALLS):  # TRL's sampler: every epoch a fresh permutation of the dataset
        while len(order) < PROMPTS_PER_CALL:
            order += rng.permutation(len(questions)).tolist()
        batch, order = order[:PROMPTS_PER_CALL], order[PROMPTS_PER_CALL:]
        ids = [questions[i].question_id for i in batch for _ in range(GROUP)]
        completions = [c for i in batch for c in _policy_samples(questions[i].question, gold[questions[i].question_id],
                                                                  call)]
        rewards = asyncio.run(hook(prompts=[""] * len(ids), completions=completions, question_id=ids))
        assert all(rewards[k] is None for k, qid in enumerate(ids) if qid in probes)  # probes train nothing
    rows = []
    for expert in experts.values():
        seen: set[str] = set()
        for request in expert.requests:
            for position, item in enumerate(request.items):
                rows.append({"position": position, "size": len(request.items), "text": item.question,
                             "values": len(item.candidates), "seen": item.question_id in seen,
                             "probe": item.question_id in probes, "expert": expert.expert_id})
            seen.update(item.question_id for item in request.items)
    return rows


def _features(rows):
    """What an expert can compute of an item: its place, its request's size, its text and values."""
    grams = np.zeros((len(rows), 64))
    for i, row in enumerate(rows):
        text = row["text"]
        for k in range(len(text) - 2):
            grams[i, zlib.crc32(text[k:k + 3].encode()) % 64] += 1
        grams[i] /= max(1, len(text) - 2)
    basic = np.array([[r["position"] / r["size"], r["position"] == r["size"] - 1, r["size"], len(r["text"]),
                       r["values"], r["seen"], r["expert"] == "client-1"] for r in rows], dtype=float)
    x = np.hstack([basic, grams])
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)


def _logistic_regression(x, y, l2=1e-2, steps=3000, rate=0.5):
    """Weights of an L2-regularised logistic regression by gradient descent (numpy only)."""
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w -= rate * (x.T @ (p - y) / len(y) + l2 * w)
        b -= rate * float(np.mean(p - y))
    return w, b


def _held_out_accuracy(rows, seed=0):
    """(right, tested): trained on the items of half the questions, tested on the other half's, each
    half balanced (as many real items as probes). Split by question, not by item: a question comes
    back every epoch, and a classifier told which texts are probes would otherwise recognise them,
    a label no expert has."""
    rng = np.random.default_rng(seed)
    texts = sorted({r["text"] for r in rows})
    train_texts = set(rng.permutation(texts)[:len(texts) // 2].tolist())

    def balanced(indices):
        probe = [i for i in indices if rows[i]["probe"]]
        real = rng.choice([i for i in indices if not rows[i]["probe"]], size=len(probe), replace=False).tolist()
        chosen = np.array(probe + real)
        return _features([rows[i] for i in chosen]), np.array([rows[i]["probe"] for i in chosen], dtype=float)

    train = balanced([i for i, r in enumerate(rows) if r["text"] in train_texts])
    test = balanced([i for i, r in enumerate(rows) if r["text"] not in train_texts])
    w, b = _logistic_regression(*train)
    predicted = (test[0] @ w + b) > 0
    return int((predicted == (test[1] == 1)).sum()), len(test[1])


def _chance_bound(tested):
    """The most right answers a coin would give on `tested` items, at the one-sided 0.1% level."""
    return tested / 2 + Z_ONE_SIDED * math.sqrt(tested) / 2


def test_enough_probes_reached_the_experts(seen_by_experts):
    probes = sum(r["probe"] for r in seen_by_experts)
    assert probes >= 250 and abs(probes / len(seen_by_experts) - SHARE) < 0.05  # at the share, as mixed


def test_a_classifier_on_what_an_expert_sees_tells_probes_apart_no_better_than_chance(seen_by_experts):
    right, tested = _held_out_accuracy(seen_by_experts)
    assert right <= _chance_bound(tested), f"{right} of {tested} right: probes can be told apart"


def test_the_same_classifier_finds_probes_appended_after_the_real_items(seen_by_experts):
    # The control: the old re-check's layout (probes after the real items of each request) is a leak
    # this classifier finds, so the test above could fail.
    leaky = [{**row, "position": row["size"] - 1 if row["probe"] else max(0, min(row["position"], row["size"] - 2))}
             for row in seen_by_experts]
    right, tested = _held_out_accuracy(leaky)
    assert right > 0.9 * tested
