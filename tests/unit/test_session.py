"""Both sides of a scoring session (`transport.session`): each expert gets what its scorer reads, each
question's text once per session; a client that lacks a text says so and gets it again in the same
round; every candidate gets the reward its own answer earns; and the reward stream of a fixed batch is
bit-identical whether the built-in scorers are sent full texts or distinct final answers.

Run: pytest tests/unit/test_session.py
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.data.prompts import PREFILL
from fedgrpo.data.tasks import Question
from fedgrpo.scorers.expert import LocalExpert
from fedgrpo.training.reward import FederatedReward
from fedgrpo.training.trainer import group_by_question
from fedgrpo.transport.base import ExpertFault
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.session import MAX_SESSIONS, ClientEndpoint
from fedgrpo.types import (
    NO_ANSWER,
    FailureKind,
    Hello,
    QuestionText,
    Reads,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    WireItem,
    WireScoreRequest,
)

GEN = "basic_arithmetic"
EARNED = {"5": 1.0, "7": 0.0, "9": 0.4, NO_ANSWER: 0.0}  # an answer-matching scorer's verdicts


def earned(answer: str) -> float:
    return EARNED.get(answer, math.nan)  # an answer it cannot judge: no reward


class Scorer:
    """A client's expert that scores by final answer (extracting it itself when sent full texts) and
    keeps every request it was asked."""

    def __init__(self, reads: Reads = Reads.ANSWERS):
        self.reads, self.requests = reads, []

    def hello(self) -> Hello:
        return Hello("expert", "arithmetic", reads=self.reads)

    def score(self, request: ScoreRequest) -> ScoreReply:
        self.requests.append(request)
        if request.reads is Reads.ANSWERS:
            values = [earned(a) for i in request.items for a in i.candidates]
        else:
            values = [earned(PREFILL.extract(c) or NO_ANSWER) for i in request.items for c in i.candidates]
        return ScoreReply(request.step, tuple(values))


class Restartable:
    """A client's endpoint that can restart (forgetting the session's texts) and keeps the wire
    requests it was sent."""

    speaks_wire = True

    def __init__(self, expert):
        self.expert, self.sent = expert, []
        self.endpoint = ClientEndpoint(expert)

    def restart(self):
        self.endpoint = ClientEndpoint(self.expert)

    def hello(self):
        return self.endpoint.hello()

    def score(self, request):
        self.sent.append(request)
        return self.endpoint.score(request)


def _item(qid: str, *candidates: str) -> ScoreItem:
    return ScoreItem(qid, GEN, f"Calculate {qid}.", candidates)


def test_each_expert_gets_what_its_scorer_reads():
    answers, texts = Scorer(Reads.ANSWERS), Scorer(Reads.TEXTS)
    transport = EmbeddedTransport({"a": answers, "t": texts}, style=PREFILL)
    block = _item("q1", "5</answer>", " 5 </answer>", "7</answer>", "garbage", "<answer>5</answer>")
    results = transport.score_round(0, {"a": ScoreRequest(0, (block,)), "t": ScoreRequest(0, (block,))})
    # The answer scorer gets each distinct final answer once (NO_ANSWER for the untagged one)...
    assert answers.requests[0].reads is Reads.ANSWERS and answers.requests[0].items[0].candidates == ("5", "7", "")
    # ... the one that reads the reasoning every full text; both give every candidate its reward.
    assert texts.requests[0].items[0].candidates == block.candidates
    assert results.replies["a"].rewards == results.replies["t"].rewards == (1.0, 1.0, 0.0, 0.0, 1.0)


def test_without_an_extractor_every_expert_gets_full_texts():
    answers = Scorer(Reads.ANSWERS)
    EmbeddedTransport({"a": answers}).score_round(0, {"a": ScoreRequest(0, (_item("q1", "5</answer>"),))})
    assert answers.requests[0].reads is Reads.TEXTS


def test_a_questions_text_travels_once_per_expert_and_session():
    a, b = Restartable(Scorer()), Restartable(Scorer())
    transport = EmbeddedTransport({"a": a, "b": b}, style=PREFILL)
    for step in (0, 1):
        transport.score_round(step, {"a": ScoreRequest(step, (_item("q1", "5</answer>"), _item("q2", "7</answer>"))),
                                     "b": ScoreRequest(step, (_item("q2", "5</answer>"),))})
    first, second = a.sent
    assert [i.text is not None for i in first.items] == [True, True]
    assert [i.text is None for i in second.items] == [True, True]  # numbers alone: a kept the texts
    assert [i.ref for i in second.items] == [0, 1] and b.sent[1].items[0].ref == 0  # per expert numbering
    assert b.sent[0].items[0].text is not None  # q2 went to b with its text: b had not seen it
    # The second round's requests weigh less by exactly the texts they left out.
    down = [r[4] for r in transport.ledger.records if r[3] == "down" and r[2] == "a"]
    texts = sum(len(t.question_id) + len(t.generator) + len(t.question) for t in (i.text for i in first.items))
    assert down[0] - down[1] == texts
    assert transport.session.shape()["answers"]["texts_sent"] == 3


def test_a_client_that_lost_its_texts_says_so_and_gets_them_in_the_same_round():
    client = Restartable(Scorer())
    transport = EmbeddedTransport({"a": client}, style=PREFILL)
    request = ScoreRequest(0, (_item("q1", "5</answer>", "7</answer>"),))
    transport.score_round(0, {"a": request})
    client.restart()  # an expert service restarted, another Ray worker, an evicted cache
    results = transport.score_round(1, {"a": ScoreRequest(1, request.items)})
    # Asked by number only, it said it lacks the text; the same request went again with every text.
    assert [i.text is None for i in client.sent[1].items] == [True] and client.sent[2].items[0].text is not None
    assert results.replies["a"].rewards == (1.0, 0.0) and not results.failures
    assert [r[3] for r in transport.ledger.records if r[1] == 1] == ["down", "down", "up"]


def test_a_client_keeps_the_texts_of_its_last_sessions_only():
    client = ClientEndpoint(Scorer())

    def ask(session: str, text: bool):
        question = QuestionText("q1", GEN, "Calculate q1.") if text else None
        return client.score(WireScoreRequest(0, session, Reads.ANSWERS, (WireItem(0, question, ("5",)),)))

    for k in range(MAX_SESSIONS + 1):
        ask(f"s{k}", text=True)
    assert ask(f"s{MAX_SESSIONS}", text=False).step == 0  # the latest sessions are kept
    with pytest.raises(ExpertFault) as caught:
        ask("s0", text=False)  # the oldest was forgotten: the client says so, typed
    assert caught.value.kind is FailureKind.NEEDS_TEXT


def test_the_client_logs_what_8_bit_packing_changed():
    class Half(Scorer):
        def score(self, request):
            return ScoreReply(request.step, (0.5,) * request.num_candidates)

    transport = EmbeddedTransport({"a": Half()}, style=PREFILL)
    [reward] = transport.score_round(0, {"a": ScoreRequest(0, (_item("q1", "5</answer>"),))}).replies["a"].rewards
    assert reward == 128 / 255 and transport.endpoints["a"].quantisation_error == pytest.approx(128 / 255 - 0.5)


pieces = st.sampled_from(["5</answer>", " 5 </answer>", "7</answer>", "9</answer>", "<answer>5</answer>",
                          "<answer>8</answer> x", "5", "", "<answer>7", "5.0</answer>", "</answer>"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(pieces, min_size=1, max_size=8), min_size=1, max_size=4))
def test_every_candidate_gets_the_reward_its_own_answer_earns(blocks):
    """Through the whole round (server extraction, de-duplication, packing, the client, mapping back),
    against the slow reference: each candidate's own answer, looked up."""
    transport = EmbeddedTransport({"a": Scorer()}, style=PREFILL)
    items = tuple(_item(f"q{k}", *block) for k, block in enumerate(blocks))
    rewards = transport.score_round(3, {"a": ScoreRequest(3, items)}).replies["a"].rewards
    expected = [earned(PREFILL.extract(c) or NO_ANSWER) for block in blocks for c in block]
    assert len(rewards) == len(expected)
    assert all((math.isnan(r) and math.isnan(e)) or r == e for r, e in zip(rewards, expected))


# --- the built-in scorers: the same rewards whatever form they are sent --------------------------------

QUESTIONS = {qid: Question(qid, "arithmetic", GEN, text, None) for qid, text in (
    ("q1", "Calculate 2 + 3."), ("q2", "Calculate 4 * 2."), ("q3", "Calculate 9 - 4."), ("q4", "Calculate 1 + 1."))}
GOLD = {"q1": "5", "q2": "8", "q3": "5", "q4": "2"}
# A fixed batch: per question M * G = 8 candidates with right and wrong answers, another notation of the
# right one (math-verify agrees), no closing tag, an empty one, a re-opened tag and a truncated one.
BATCH = {
    "q1": ["5</answer>", " 5 </answer>", "6</answer>", "5.0</answer>", "5", "", "<answer>5</answer>", "<answer>5"],
    "q2": ["8</answer>", "9</answer>", "8</answer>", "16</answer>", "</answer>", "8.0</answer>", "7</answer>", "8"],
    "q3": ["4</answer>", "5</answer>", "<answer>3</answer><answer>5</answer>", "x</answer>", "5 </answer>",
           "55</answer>", "", "5</answer>"],
    "q4": ["2</answer>", "2</answer>", "2</answer>", "3</answer>", "two</answer>", "2", "1+1</answer>", "2</answer>"],
}
ROUTING = {"q1": ("gated", "model"), "q2": ("model", "answer"), "q3": ("answer", "gated"), "q4": ("gated", "answer")}


def _experts() -> dict[str, LocalExpert]:
    """One expert per built-in mode: gated holds q1's and q4's labels, answer-only q2's (it abstains
    elsewhere: NaN), model-based answers every question itself (seeded, so no model is loaded)."""

    def expert(mode: str, held: tuple[str, ...], own: dict[str, str]) -> LocalExpert:
        data = [Question(q, "arithmetic", GEN, QUESTIONS[q].question, GOLD[q]) for q in held]
        client = LocalExpert(mode, data, Path("/nonexistent"), mode=mode, style=PREFILL, expert_samples=1,
                             max_new_tokens=8, batch_size=8, seed=0)
        client._expert_answers.update(own)  # stands in for the expert model's own answers
        return client

    return {"gated": expert("gated", ("q1", "q4"), {"q2": "8", "q3": "4"}),
            "model": expert("model", (), {"q1": "6", "q2": "8", "q3": "5", "q4": "2"}),
            "answer": expert("answer", ("q2",), {})}


def _stream(style) -> tuple[list, dict]:
    """Three reward calls of the fixed batch (the later ones send no question text), through the
    embedded engine with the built-in experts; `style` None sends full texts. (The stream, and the
    bytes each form sent.)"""
    transport = EmbeddedTransport(_experts(), style=style)
    hook = FederatedReward(QUESTIONS, ROUTING, transport, group_size=8, style=PREFILL, accuracy_weight=8.0,
                           format_weight=1.0, tag_weight=0.0, group_by_question=group_by_question)
    completions = [c for qid in BATCH for c in BATCH[qid]]
    question_id = [qid for qid in BATCH for _ in BATCH[qid]]
    stream = [asyncio.run(hook(prompts=[""] * len(completions), completions=completions, question_id=question_id))
              for _ in range(3)]
    return stream, {form: counts["values"] for form, counts in transport.session.shape().items()}


def test_the_built_in_scorers_reward_stream_is_bit_identical_both_ways():
    texts, sent_texts = _stream(None)
    answers, sent_answers = _stream(PREFILL)
    assert answers == texts  # the same floats in the same places, None (missing) where it was None
    assert any(r is None for r in texts[0]) and len(set(texts[0]) - {None}) > 2  # missing, right, wrong, format
    # One way sent every candidate, the other each distinct answer once.
    assert set(sent_texts) == {"texts"} and set(sent_answers) == {"answers"}
    assert sent_answers["answers"] < sent_texts["texts"] == 3 * 32


def test_the_processes_of_one_site_share_its_texts_through_its_store(tmp_path):
    """Flower Simulation hands a node's messages to whichever Ray worker is free: each worker's endpoint
    appends the texts it receives to the site's store, and one that lacks a text reads it there."""
    first, second = ClientEndpoint(Scorer(), store=tmp_path), ClientEndpoint(Scorer(), store=tmp_path)
    question = QuestionText("q1", GEN, "Calculate q1.")
    first.score(WireScoreRequest(0, "s", Reads.ANSWERS, (WireItem(0, question, ("5",)),)))
    reply = second.score(WireScoreRequest(1, "s", Reads.ANSWERS, (WireItem(0, None, ("5", "7")),)))
    assert reply.step == 1 and second.expert.requests[0].items[0].question == "Calculate q1."
    with pytest.raises(ExpertFault):  # a text nobody of this site received is still asked for
        second.score(WireScoreRequest(2, "s", Reads.ANSWERS, (WireItem(1, None, ("5",)),)))
    # The store keeps the site's last sessions only.
    for k in range(MAX_SESSIONS + 2):
        first.score(WireScoreRequest(0, f"other-{k}", Reads.ANSWERS, (WireItem(0, question, ("5",)),)))
    assert len(list(tmp_path.glob("texts-*.jsonl"))) == MAX_SESSIONS


def test_a_resumed_run_sends_what_the_uninterrupted_run_sent(tmp_path):
    """The server journals its session (name, question numbers, what each expert holds) and the
    clients keep their texts in their stores: after a kill, the rounds redone from the checkpoint send
    the very messages of the uninterrupted run, with no text asked for again."""
    rounds = [ScoreRequest(step, (_item("q1", "5</answer>"), _item(f"q{step + 2}", "7</answer>"))) for step in range(3)]

    def transport(root):
        root.mkdir(exist_ok=True)
        return EmbeddedTransport({"a": Scorer()}, style=PREFILL, stores={"a": root / "texts"})

    straight = transport(tmp_path / "straight")
    straight.session.attach(tmp_path / "straight" / "session.jsonl", 0)
    for step, request in enumerate(rounds):
        straight.score_round(step, {"a": request})
    killed = transport(tmp_path / "killed")
    killed.session.attach(tmp_path / "killed" / "session.jsonl", 0)
    for step, request in enumerate(rounds):  # killed after step 2's round, its checkpoint at step 1
        killed.score_round(step, {"a": request})
    resumed = transport(tmp_path / "killed")  # a new process: a new session object, new endpoints
    resumed.session.attach(tmp_path / "killed" / "session.jsonl", 1)
    assert resumed.session.name == killed.session.name
    for step, request in list(enumerate(rounds))[1:]:
        assert resumed.score_round(step, {"a": request}).replies["a"].rewards == (1.0, 0.0)
    redone = [r[:5] for r in resumed.ledger.records]
    assert redone == [r[:5] for r in straight.ledger.records if r[1] >= 1]  # no retry, the same payloads
