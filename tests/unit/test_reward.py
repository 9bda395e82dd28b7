"""The federated reward hook: routing of candidate blocks, reward order, NaN for missing experts."""

from __future__ import annotations

import asyncio
import math

import pytest

from fedgrpo.data.prompts import PREFILL
from fedgrpo.data.tasks import Question
from fedgrpo.training.reward import FederatedReward, expert_blocks
from fedgrpo.training.trainer import group_by_question
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.types import Hello, ScoreReply, ScoreRequest

G = 2


class EchoExpert:
    """Rewards a candidate 1.0 when its text (before the tag) equals this client's favourite answer."""

    def __init__(self, favourite: str, fail: bool = False):
        self.favourite, self.fail = favourite, fail
        self.requests: list[ScoreRequest] = []

    def hello(self) -> Hello:
        return Hello("expert", "arithmetic")

    def score(self, request: ScoreRequest) -> ScoreReply:
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("down")
        rewards = tuple(1.0 if c.startswith(self.favourite) else 0.0
                        for item in request.items for c in item.candidates)
        return ScoreReply(request.step, rewards)


def _questions():
    return {qid: Question(qid, "arithmetic", "basic_arithmetic", f"Calculate {qid}.", None) for qid in ("q1", "q2")}


def ask(hook, **kwargs):
    """What TRL does with the async reward function: await it (here on a fresh event loop)."""
    return asyncio.run(hook(**kwargs))


def _hook(clients, routing, format_weight=0.0):
    return FederatedReward(_questions(), routing, EmbeddedTransport(clients), group_size=2 * G,
                           style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=format_weight,
                           group_by_question=group_by_question)


def test_blocks_of_g_go_to_the_selected_experts_in_order():
    a, b = EchoExpert("1"), EchoExpert("2")
    hook = _hook({"a": a, "b": b}, {"q1": ("a", "b"), "q2": ("b", "a")})
    completions = ["1</answer>", "2</answer>", "2</answer>", "1</answer>",   # q1: a gets [0,2), b [2,4)
                   "1</answer>", "1</answer>", "2</answer>", "2</answer>"]   # q2: b gets [4,6), a [6,8)
    rewards = ask(hook, prompts=[""] * 8, completions=completions, question_id=["q1"] * 4 + ["q2"] * 4)
    assert rewards == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # One message per expert per call, carrying all of its blocks.
    assert len(a.requests) == 1 and [i.question_id for i in a.requests[0].items] == ["q1", "q2"]


def test_a_failed_expert_gives_none_for_its_blocks_only():
    hook = _hook({"a": EchoExpert("1"), "b": EchoExpert("1", fail=True)}, {"q1": ("a", "b"), "q2": ("a", "b")})
    rewards = ask(hook, prompts=[""] * 8, completions=["1</answer>"] * 8, question_id=["q1"] * 4 + ["q2"] * 4)
    # None (TRL: NaN, advantage 0) - never a silent zero.
    assert rewards == [1.0, 1.0, None, None, 1.0, 1.0, None, None]
    assert [f.expert_id for f in hook.log.failures] == ["b"]


def test_every_expert_failing_stops_training():
    hook = _hook({"a": EchoExpert("1", fail=True)}, {"q1": ("a", "a")})
    with pytest.raises(RuntimeError, match="every expert failed"):
        ask(hook, prompts=[""] * 4, completions=["1</answer>"] * 4, question_id=["q1"] * 4)


def test_format_reward_adds_but_cannot_revive_a_missing_reward():
    hook = _hook({"a": EchoExpert("1"), "b": EchoExpert("1", fail=True)}, {"q1": ("a", "b")}, format_weight=0.5)
    rewards = ask(hook, prompts=[""] * 4, completions=["1</answer>", "9", "1</answer>", "1</answer>"],
                   question_id=["q1"] * 4)
    assert rewards[:2] == [1.5, 0.0]  # well-formed right answer; unclosed answer gets neither part
    assert rewards[2:] == [None, None]


def test_ground_truth_mode_scores_locally_without_transport():
    hook = FederatedReward(_questions(), None, None, group_size=2, style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.0,
                           group_by_question=group_by_question,
                           gold_scorer=lambda q, c: 1.0 if c.startswith("4") else 0.0)
    assert ask(hook, prompts=[""] * 2, completions=["4</answer>", "5</answer>"], question_id=["q1", "q1"]) == [1.0, 0.0]
    assert math.isclose(hook.log.steps[-1]["reward"], 0.5)


def test_mixed_question_blocks_are_rejected():
    hook = _hook({"a": EchoExpert("1")}, {"q1": ("a", "a"), "q2": ("a", "a")})
    with pytest.raises(Exception, match="mix questions"):
        ask(hook, prompts=[""] * 4, completions=["1"] * 4, question_id=["q1", "q2", "q1", "q2"])


def test_a_question_with_one_competent_expert_sends_it_the_whole_group():
    # A competence threshold kept one expert for q1 (and two for q2): q1's M*G = 4 candidates all go
    # to a, in one block; q2's are split as usual.
    a, b = EchoExpert("1"), EchoExpert("2")
    hook = _hook({"a": a, "b": b}, {"q1": ("a",), "q2": ("b", "a")})
    completions = ["1</answer>", "2</answer>", "1</answer>", "1</answer>",
                   "2</answer>", "1</answer>", "1</answer>", "2</answer>"]
    rewards = ask(hook, prompts=[""] * 8, completions=completions, question_id=["q1"] * 4 + ["q2"] * 4)
    assert rewards == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert [len(i.candidates) for i in a.requests[0].items] == [4, 2]  # q1 whole, q2 its second block
    assert [len(i.candidates) for i in b.requests[0].items] == [2]


def test_expert_blocks_split_a_group_as_evenly_as_possible():
    assert expert_blocks(slice(8, 16), 2) == [slice(8, 12), slice(12, 16)]  # M*G for M: blocks of G
    assert [b.stop - b.start for b in expert_blocks(slice(0, 8), 3)] == [3, 3, 2]
    assert expert_blocks(slice(4, 8), 1) == [slice(4, 8)]
    with pytest.raises(ValueError, match="cannot split"):
        expert_blocks(slice(0, 2), 3)


def test_competence_weighting_pulls_an_incompetent_experts_block_to_the_competent_mean():
    # a (competence 1) rewards q1's first block [1, 0]; b (competence 0) would reward its block [0, 0]
    # (it knows nothing here): shrunk, b's block sits at a's mean 0.5 and moves no advantage.
    routing = {"q1": ("a", "b")}
    hook = FederatedReward(_questions(), routing, EmbeddedTransport({"a": EchoExpert("1"), "b": EchoExpert("9")}),
                           group_size=4, style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.0,
                           group_by_question=group_by_question, competence={"q1": (1.0, 0.0)})
    rewards = ask(hook, prompts=[""] * 4, completions=["1</answer>", "2</answer>", "1</answer>", "3</answer>"],
                  question_id=["q1"] * 4)
    assert rewards == [1.0, 0.0, 0.5, 0.5]


# --- deferred mode (overlap_rewards) --------------------------------------------------------------


def _deferred(clients, routing):
    return FederatedReward(_questions(), routing, EmbeddedTransport(clients), group_size=2 * G,
                           style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.5,
                           group_by_question=group_by_question, deferred=True)


def test_deferred_call_returns_placeholders_and_resolve_gives_the_synchronous_rewards():
    routing = {"q1": ("a", "b"), "q2": ("a", "b")}
    completions = ["1</answer>", "2", "2</answer>", "1</answer>"] * 2
    call = {"prompts": [""] * 8, "completions": completions, "question_id": ["q1"] * 4 + ["q2"] * 4}
    sync = _hook({"a": EchoExpert("1"), "b": EchoExpert("2", fail=True)}, routing, format_weight=0.5)
    expected = ask(sync, **call)
    a, b = EchoExpert("1"), EchoExpert("2", fail=True)
    hook = _deferred({"a": a, "b": b}, routing)
    assert ask(hook, **call) == [0.0] * 8  # TRL gets placeholders; nothing was sent yet
    assert a.requests == []
    pending = hook.submit(step=7)  # labelled with the step that will train on it
    assert hook.resolve(pending) == expected  # b failed: None (NaN, advantage 0) for its blocks
    assert [r.step for r in a.requests] == [7]
    # The log holds the real rewards and failures, as a synchronous call's would.
    assert hook.log.steps[-1] == {**sync.log.steps[-1], "step": 7}
    assert [f.expert_id for f in hook.log.failures] == ["b"]
    hook.close()


def test_deferred_every_expert_failing_stops_training_when_the_batch_is_needed():
    hook = _deferred({"a": EchoExpert("1", fail=True), "b": EchoExpert("1", fail=True)}, {"q1": ("a", "b")})
    ask(hook, prompts=[""] * 4, completions=["1</answer>"] * 4, question_id=["q1"] * 4)
    pending = hook.submit(step=0)
    with pytest.raises(RuntimeError, match="every expert failed at step 0"):
        hook.resolve(pending)
    hook.close()


def test_deferred_ground_truth_and_misuse():
    hook = FederatedReward(_questions(), None, None, group_size=2, style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.0,
                           group_by_question=group_by_question,
                           gold_scorer=lambda q, c: 1.0 if c.startswith("4") else 0.0, deferred=True)
    with pytest.raises(RuntimeError, match="without a staged reward call"):
        hook.submit(step=0)
    ask(hook, prompts=[""] * 2, completions=["4</answer>", "5</answer>"], question_id=["q1", "q1"])
    with pytest.raises(RuntimeError, match="never submitted"):  # two calls, one submit: a trainer bug
        ask(hook, prompts=[""] * 2, completions=["4</answer>", "5</answer>"], question_id=["q1", "q1"])
    assert hook.resolve(hook.submit(step=0)) == [1.0, 0.0]  # scored locally, same as synchronous


def test_replicated_scoring_sends_every_candidate_to_every_selected_expert_and_takes_the_median():
    from fedgrpo.scorers.adversary import AdversarialExpert

    honest_a, honest_b = EchoExpert("1"), EchoExpert("1")
    liar = AdversarialExpert(EchoExpert("1"), "invert")
    hook = FederatedReward(_questions(), {"q1": ("a", "b", "c"), "q2": ("a", "a", "a")},
                           EmbeddedTransport({"a": honest_a, "b": honest_b, "c": liar}), group_size=2 * G,
                           style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.0,
                           group_by_question=group_by_question, replicate="median")
    completions = ["1</answer>", "2</answer>", "1</answer>", "2</answer>"] * 2
    rewards = ask(hook, prompts=[""] * 8, completions=completions, question_id=["q1"] * 4 + ["q2"] * 4)
    # q1: the median of (honest, honest, inverted) is the honest reward; q2's padded routing asks a once.
    assert rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert [len(i.candidates) for i in honest_a.requests[0].items] == [4, 4]
    assert [i.question_id for i in honest_b.requests[0].items] == ["q1"]


def test_a_probes_candidates_are_scored_like_any_question_but_train_nothing():
    # q2 is a re-check probe: its expert is asked exactly as for q1 (so it cannot tell), and its
    # whole reward is None (advantage 0: the server's labels judge experts, never teach the policy).
    a = EchoExpert("1")
    hook = FederatedReward(_questions(), {"q1": ("a",), "q2": ("a",)}, EmbeddedTransport({"a": a}), group_size=2,
                           style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.5,
                           group_by_question=group_by_question, probes=frozenset({"q2"}))
    rewards = ask(hook, prompts=[""] * 4, completions=["1</answer>", "2</answer>"] * 2, question_id=["q1"] * 2 + ["q2"] * 2)
    assert rewards == [1.5, 0.5, None, None]  # not even the format reward: no signal at all
    assert [len(i.candidates) for i in a.requests[0].items] == [2, 2]
    assert hook.log.steps[-1]["probes"] == 2 and hook.log.steps[-1]["missing"] == 0  # a probe is not a failure
