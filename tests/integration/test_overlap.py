"""overlap_rewards (fedgrpo.training.overlap): batch k+1's reward round trip overlaps training on batch k.

Pinned on real GRPOTrainer runs of an untrained micro model, rewarded by in-process experts through
the embedded transport and the real FederatedReward in deferred mode:

- the request for the next batch leaves before the step on the current batch ends, and that step
  does not wait for it (the experts block until the previous step ended: a synchronous run would
  wait for them instead, and fail the check after a timeout);
- the loss trains on `federated_advantages` (joint) of the real rewards, with the sampling
  policy's log-probabilities; a missing reward gets advantage 0; TRL logs the real reward;
- two runs with the same seeds end with identical weights;
- an interrupted run resumes from its checkpoint and trains every question once, in the sampler's
  order (the batch in flight at the checkpoint is generated and requested again).

Run: .venv/bin/python -m pytest tests/integration/test_overlap.py
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from fedgrpo.core.advantage import federated_advantages
from fedgrpo.data.prompts import PREFILL
from fedgrpo.errors import ConfigError
from fedgrpo.training.reward import FederatedReward
from fedgrpo.training.trainer import group_by_question
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.types import Hello, ScoreReply, ScoreRequest

from . import test_trainer as _trainer_tests
from .conftest import grpo_settings
from .test_trainer import EXPERTS, NUM_GENERATIONS, PER_EXPERT, PROMPTS_PER_STEP, _permutation

# The synchronous trainer tests' module fixtures: the same micro model, questions and one-thread setup.
model_dir, questions = _trainer_tests.model_dir, _trainer_tests.questions
_offline_single_thread = _trainer_tests._offline_single_thread

pytestmark = pytest.mark.slow

MAX_STEPS = 3


class BlockingExpert:
    """Rewards from the candidate text; a request for step L > 0 is answered only after step L-1
    ended (or after a timeout, recorded as not overlapped). The "b" expert's first candidate of
    every request is unscored (NaN: a missing reward)."""

    def __init__(self, name: str, step_ended: list[threading.Event]):
        self.name, self.step_ended = name, step_ended
        self.seen: list[tuple[int, bool]] = []  # (step label, answered only after step label-1 ended)

    def hello(self) -> Hello:
        return Hello(self.name, "arithmetic")

    def score(self, request: ScoreRequest) -> ScoreReply:
        overlapped = request.step == 0 or self.step_ended[request.step - 1].wait(timeout=30)
        self.seen.append((request.step, overlapped))
        rewards = [sum(map(ord, c)) % 7 / 6 for item in request.items for c in item.candidates]
        if self.name == "b":
            rewards[0] = math.nan
        return ScoreReply(request.step, tuple(rewards))


class OverlapRun:
    """One overlapped run and what it showed."""

    def __init__(self, model_dir, questions, out, *, max_steps=MAX_STEPS, seed=3, save_steps=100,
                 callbacks=(), resumes_at=0):
        from transformers import TrainerCallback

        from fedgrpo.training.trainer import build_grpo_trainer

        self.step_ended = [threading.Event() for _ in range(max_steps)]
        for event in self.step_ended[:resumes_at]:
            event.set()  # steps an earlier session trained
        self.experts = {e: BlockingExpert(e, self.step_ended) for e in ("a", "b")}
        routing = {q.question_id: ("a", "b") for q in questions}
        self.reward = FederatedReward(
            {q.question_id: q for q in questions}, routing, EmbeddedTransport(self.experts, timeout_s=60),
            group_size=NUM_GENERATIONS, style=PREFILL, tag_weight=0.0, accuracy_weight=1.0,
            format_weight=0.0, group_by_question=group_by_question, deferred=True,
        )
        self.settings = grpo_settings(
            num_generations=NUM_GENERATIONS, prompts_per_step=PROMPTS_PER_STEP, max_steps=max_steps,
            max_completion_length=8, save_steps=save_steps, seed=seed, overlap_rewards=True,
        )
        self.trainer = build_grpo_trainer(model_dir, questions, self.reward, self.settings, out)
        step_ended = self.step_ended

        class MarkStepEnd(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                step_ended[state.global_step - 1].set()

        self.trainer.add_callback(MarkStepEnd())
        for callback in callbacks:
            self.trainer.add_callback(callback)

        # Test-only spies: the rewards each resolved batch got (with its step label), the advantages
        # written into it, and what the loss received at every step.
        self.resolved: list[tuple[int, list[float | None], list[str]]] = []
        self.batch_advantages: list[np.ndarray] = []
        self.loss_inputs: list[dict] = []
        resolve, with_real, compute_loss = (self.reward.resolve, self.trainer._with_real_rewards,
                                            self.trainer._compute_loss)

        def spy_resolve(pending):
            rewards = resolve(pending)
            self.resolved.append((pending.step, rewards, []))
            return rewards

        def spy_with_real(batch):
            out = with_real(batch)
            self.resolved[-1][2].extend(row["question_id"] for row in batch.rows)
            self.batch_advantages.append(out["advantages"].numpy().copy())
            return out

        def spy_loss(model, inputs):
            self.loss_inputs.append({k: v for k, v in inputs.items() if k in ("advantages", "old_per_token_logps")})
            return compute_loss(model, inputs)

        self.reward.resolve, self.trainer._with_real_rewards = spy_resolve, spy_with_real
        self.trainer._compute_loss = spy_loss

    def train(self):
        from fedgrpo.training.trainer import train_grpo

        try:
            return train_grpo(self.trainer, resume=True)
        finally:
            self.reward.close()

    def weights(self):
        return {n: p.detach().clone() for n, p in self.trainer.model.named_parameters()}


@pytest.fixture(scope="module")
def overlapped(model_dir, questions, tmp_path_factory) -> OverlapRun:
    observed = OverlapRun(model_dir, questions, tmp_path_factory.mktemp("overlap-run"))
    observed.train()
    return observed


def _as_array(rewards: list[float | None]) -> np.ndarray:
    return np.array([np.nan if r is None else r for r in rewards], dtype=np.float64)


def test_next_batch_is_requested_before_the_current_one_trains(overlapped):
    assert overlapped.trainer.state.global_step == MAX_STEPS
    for expert in overlapped.experts.values():
        # One message per expert per generation batch, in order; every request after the first was
        # answered while the previous step trained, which a synchronous trainer cannot do (it would
        # wait for the reply before that step, and the expert waits for the step: timeout, False).
        assert expert.seen == [(0, True)] + [(step, True) for step in range(1, MAX_STEPS)]
    # Each batch trained at the step it was labelled with, and no batch was generated to be dropped.
    assert [label for label, _, _ in overlapped.resolved] == list(range(MAX_STEPS))


def test_the_loss_trains_on_the_real_advantages_with_sampling_logps(overlapped):
    for (_, rewards, _), used, loss_in in zip(overlapped.resolved, overlapped.batch_advantages,
                                             overlapped.loss_inputs, strict=True):
        r = _as_array(rewards)
        assert np.isnan(r).any()  # expert b leaves its first candidate unscored in every request
        expected = federated_advantages(r.reshape(PROMPTS_PER_STEP, EXPERTS, PER_EXPERT),
                                        pooling="joint", scale_rewards="group").reshape(-1)
        # TRL computes in float32; 1e-5 is far below the advantages' spacing.
        np.testing.assert_allclose(used, expected, rtol=0, atol=1e-5)
        assert (used[np.isnan(r)] == 0).all() and np.abs(used).max() > 0.1  # not the placeholders' zeros
        # The loss sees the same advantages (shuffled) and the sampling policy's log-probabilities,
        # so its importance ratio corrects the one-batch lag instead of being taken as 1.
        np.testing.assert_allclose(np.sort(loss_in["advantages"].numpy()), np.sort(used), rtol=0, atol=0)
        assert loss_in["old_per_token_logps"].shape[0] == len(used)


def test_trl_logs_and_the_reward_log_hold_the_real_rewards(overlapped):
    logged = [h["reward"] for h in overlapped.trainer.state.log_history if "reward" in h]
    real = [float(np.nanmean(_as_array(rewards))) for _, rewards, _ in overlapped.resolved]
    np.testing.assert_allclose(logged, real, rtol=1e-6)
    assert [s["step"] for s in overlapped.reward.log.steps] == list(range(MAX_STEPS))
    assert all(s["missing"] == 1 for s in overlapped.reward.log.steps)  # b's first candidate


def test_same_seeds_give_identical_weights(overlapped, model_dir, questions, tmp_path):
    import torch

    again = OverlapRun(model_dir, questions, tmp_path)
    again.train()
    first_weights, again_weights = overlapped.weights(), again.weights()
    for name, tensor in first_weights.items():
        assert torch.equal(tensor, again_weights[name]), name
    assert [r for _, r, _ in again.resolved] == [r for _, r, _ in overlapped.resolved]


class _Interrupted(Exception):
    pass


def test_interrupted_run_resumes_and_trains_every_question_once(model_dir, questions, tmp_path):
    from transformers import TrainerCallback

    from fedgrpo.training.trainer import last_checkpoint

    class InterruptAfterSaving(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise _Interrupted  # as a crash right after checkpoint-2, with step 2's batch in flight

    first = OverlapRun(model_dir, questions, tmp_path, save_steps=2, seed=5, callbacks=[InterruptAfterSaving()])
    with pytest.raises(_Interrupted):
        first.train()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    # Steps 0 and 1 trained; the batch for step 2 had been generated and requested, not trained.
    assert [label for label, _, _ in first.resolved] == [0, 1]
    expert = first.experts["a"]
    for _ in range(100):  # the request for step 2 completes on its own thread after step 1 ended
        if len(expert.seen) == 3:
            break
        time.sleep(0.1)
    assert [step for step, _ in expert.seen] == [0, 1, 2]

    second = OverlapRun(model_dir, questions, tmp_path, save_steps=2, seed=5, resumes_at=2)
    assert second.train().global_step == MAX_STEPS
    # The resumed run generated step 2's batch again from the same questions and trained it.
    assert [label for label, _, _ in second.resolved] == [2]
    trained = [qids for _, _, qids in first.resolved + second.resolved]
    order = [questions[i].question_id for i in _permutation(len(questions), 5)]
    # Every question once, in the sampler's order: nothing skipped, nothing trained twice.
    per_step = [[qid for qid, _ in group_by_question(q, NUM_GENERATIONS)] for q in trained]
    assert per_step == [order[0:3], order[3:6], order[6:9]]


def test_unsupported_settings_are_refused_before_loading_the_model(model_dir, questions, tmp_path):
    from fedgrpo.training.trainer import build_grpo_trainer

    settings = grpo_settings(num_generations=NUM_GENERATIONS, prompts_per_step=PROMPTS_PER_STEP,
                            overlap_rewards=True)
    # A synchronous reward function cannot be overlapped.
    with pytest.raises(ConfigError, match="deferred reward function"):
        build_grpo_trainer(model_dir, questions, lambda completions, **_: [0.0] * len(completions),
                           settings, tmp_path)
    deferred = FederatedReward({}, {}, EmbeddedTransport({}), group_size=NUM_GENERATIONS,
                               style=PREFILL, tag_weight=0.0, accuracy_weight=1.0, format_weight=0.0,
                               group_by_question=group_by_question, deferred=True)
    accumulating = grpo_settings(num_generations=NUM_GENERATIONS, prompts_per_step=PROMPTS_PER_STEP,
                                overlap_rewards=True, extra={"gradient_accumulation_steps": 2})
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=1"):
        build_grpo_trainer(model_dir, questions, deferred, accumulating, tmp_path)
