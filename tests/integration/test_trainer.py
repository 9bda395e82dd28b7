"""The TRL adapter (fedgrpo.training.trainer) and the TRL 1.16 facts FedGRPO relies on.

Pinned here, on real GRPOTrainer runs of an untrained micro model (2-3 steps each):

(a) one reward call holds `prompts_per_step` questions, each question's `num_generations`
    completions consecutively; the questions are TRL's seeded permutation of the dataset, taken
    `prompts_per_step` at a time (RepeatSampler);
(b) the advantages TRL used can be read back through the public `log_completions` option (one
    parquet file per logged step, rows in reward-call order) and equal `federated_advantages`
    with `pooling="joint"` on the rewards our function returned;
(c) a None reward becomes NaN, is left out of its group's baseline and gets advantage 0;
(d) a step changes every trainable parameter and logs a finite loss;
plus checkpoint resume: an interrupted run continues from its last checkpoint to `max_steps`.

Building a GRPOTrainer costs ~6 s of imports per process, so the runs are module-scoped fixtures.

Run: .venv/bin/python -m pytest tests/integration/test_trainer.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fedgrpo.config import load_config
from fedgrpo.data.prompts import PREFILL, render_prompt
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError
from fedgrpo.training.trainer import (
    GroupLayoutError,
    GRPOSettings,
    build_grpo_dataset,
    group_by_question,
    grpo_config_kwargs,
    last_checkpoint,
)

from .conftest import grpo_settings

slow = pytest.mark.slow

N_QUESTIONS = 9
PROMPTS_PER_STEP = 3
EXPERTS, PER_EXPERT = 2, 2  # M experts x G candidates: the federated group of 4
NUM_GENERATIONS = EXPERTS * PER_EXPERT


@pytest.fixture(scope="module", autouse=True)
def _offline_single_thread():
    """Offline, and one torch thread: on the shared 2-core box two threads made micro-model steps
    up to 40x slower (OpenMP threads wait on each other while other processes hold a core)."""
    import torch

    old_offline, old_threads = os.environ.get("HF_HUB_OFFLINE"), torch.get_num_threads()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old_threads)
    if old_offline is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = old_offline


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return [
        Question(f"q{i}", ("arithmetic", "spelling")[i % 2], "toy", f"What is {i} + {i % 4}?", None)
        for i in range(N_QUESTIONS)
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from fedgrpo.models.tiny import build_model, build_tokenizer

    path = tmp_path_factory.mktemp("micro-model")
    tokenizer = build_tokenizer()
    build_model("micro", tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _toy_reward(completions: list[str]) -> list[float | None]:
    """Varied rewards in [0, 1] from the text; every fifth completion of a call is unscored."""
    return [None if i % 5 == 0 else sum(map(ord, c)) % 7 / 6 for i, c in enumerate(completions)]


def _permutation(n: int, seed: int) -> list[int]:
    """RepeatSampler's order: torch.randperm with a generator seeded by GRPOConfig.seed."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


class ObservedRun:
    """What one 2-step run showed: each reward call, the advantages TRL trained on, weights."""

    def __init__(self, trainer, calls, used_advantages, before, output_dir, settings):
        self.trainer = trainer
        self.calls = calls
        self.used_advantages = used_advantages
        self.before = before
        self.output_dir = output_dir
        self.settings = settings

    def logged_completions(self, step: int):
        import pandas as pd

        return pd.read_parquet(self.output_dir / "completions" / f"completions_{step:05d}.parquet")


@pytest.fixture(scope="module")
def observed(model_dir, questions, tmp_path_factory) -> ObservedRun:
    from fedgrpo.training.trainer import build_grpo_trainer, train_grpo

    calls: list[dict] = []

    # async, as the federated reward will be: TRL awaits it on its own event loop.
    async def federated_reward(prompts, completions, question_id, domain, trainer_state, **kwargs):
        rewards = _toy_reward(completions)
        calls.append(
            {
                "prompts": list(prompts),
                "question_id": list(question_id),
                "domain": list(domain),
                "step": trainer_state.global_step,
                "rewards": rewards,
                "kwargs": sorted(kwargs),
            }
        )
        return rewards

    output_dir = tmp_path_factory.mktemp("observed-run")
    settings = grpo_settings(
        num_generations=NUM_GENERATIONS,
        prompts_per_step=PROMPTS_PER_STEP,
        max_steps=2,
        max_completion_length=8,
        save_steps=100,
        seed=3,
        # The public way to see advantages: one parquet table per logged step.
        extra={"log_completions": True, "num_completions_to_print": 1},
    )
    trainer = build_grpo_trainer(model_dir, questions, federated_reward, settings, output_dir)

    # Test-only spy (not used by the library): the advantages in the batch TRL trains on, before its
    # post-scoring shuffle. Used once, to prove that the public parquet route shows these numbers.
    used_advantages = []
    generate_and_score = trainer._generate_and_score_completions

    def spy(inputs):
        out = generate_and_score(inputs)
        used_advantages.append(out["advantages"].detach().clone().numpy())
        return out

    trainer._generate_and_score_completions = spy

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    train_grpo(trainer, resume=False)
    return ObservedRun(trainer, calls, used_advantages, before, output_dir, settings)


# --- group_by_question (pure) ---------------------------------------------------------------------


def test_group_by_question_returns_one_slice_per_block():
    ids = ["a"] * 3 + ["b"] * 3
    assert group_by_question(ids, 3) == [("a", slice(0, 3)), ("b", slice(3, 6))]


@pytest.mark.parametrize(
    "ids, n, reason",
    [
        (["a", "a", "b"], 2, "not a multiple"),  # 3 completions cannot be groups of 2
        (["a", "b", "a", "b"], 2, "mix questions"),  # interleaved, not consecutive
        (["a", "a", "a", "a"], 2, "more than one group"),  # one question split over two blocks
    ],
)
def test_group_by_question_rejects_other_layouts(ids, n, reason):
    with pytest.raises(GroupLayoutError, match=reason):
        group_by_question(ids, n)


# --- settings and dataset (no trainer) ------------------------------------------------------------


def test_settings_reject_owned_and_derived_keys_in_grpo_args():
    # A knob we own must be set through its own key, so one value cannot hide another.
    with pytest.raises(ConfigError, match="set experts_per_question and generations_per_expert"):
        load_config(overrides={"grpo_args": ("num_generations=4",)})
    with pytest.raises(ConfigError, match="flag --steps-per-generation"):
        load_config(overrides={"grpo_args": ("steps_per_generation=4",)})
    # The batch size is derived from prompts_per_step * num_generations.
    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        load_config(overrides={"grpo_args": ("per_device_train_batch_size=4",)})
    with pytest.raises(ConfigError, match="loss_type"):
        load_config(overrides={"loss_type": "ppo"})


def test_settings_derive_from_the_config_and_extra_is_a_frozen_copy():
    config = load_config(overrides={"experts_per_question": 1, "generations_per_expert": 6, "train_steps": 7,
                                    "grpo_args": ("bf16=true",)})
    settings = GRPOSettings.from_config(config)
    assert (settings.num_generations, settings.max_steps, settings.extra) == (6, 7, {"bf16": True})
    extra = {"bf16": True}
    settings = grpo_settings(extra=extra)
    extra["bf16"] = False  # the caller's dict changes later ...
    assert settings.extra["bf16"] is True  # ... the settings do not


def test_dataset_has_prompt_id_and_domain_but_no_answer(questions):
    answered = [Question("x1", "arithmetic", "toy", "What is 1 + 1?", "2")]
    row = build_grpo_dataset(answered, PREFILL)[0]
    # The gold answer never enters the server's training data.
    assert row == {
        "prompt": render_prompt("What is 1 + 1?"), "question_id": "x1", "domain": "arithmetic"
    }
    with pytest.raises(ConfigError, match="distinct question_ids"):
        build_grpo_dataset([questions[0], questions[0]], PREFILL)


@slow
def test_grpo_config_kwargs_pass_extra_through_and_reject_unknown_names(tmp_path):

    settings = grpo_settings(extra={"bf16": True, "use_vllm": True, "top_p": 0.95})
    kwargs = grpo_config_kwargs(settings, tmp_path)
    # Pass-through options reach GRPOConfig unchanged and override our CPU defaults.
    assert (kwargs["bf16"], kwargs["use_vllm"], kwargs["top_p"]) == (True, True, 0.95)
    assert kwargs["per_device_train_batch_size"] == 16 * 8  # counts completions
    with pytest.raises(ConfigError, match="'bf17'.*did you mean 'bf16'"):
        grpo_config_kwargs(grpo_settings(extra={"bf17": True}), tmp_path)


@slow
def test_too_few_questions_for_one_step_is_a_config_error(model_dir, questions, tmp_path):
    from fedgrpo.training.trainer import build_grpo_trainer

    # TRL's sampler drops incomplete batches: 9 questions and 10 per step would train on nothing.
    with pytest.raises(ConfigError, match="prompts_per_step=10"):
        build_grpo_trainer(
            model_dir, questions, _toy_reward, grpo_settings(prompts_per_step=10), tmp_path
        )


@slow
def test_steps_per_generation_sends_one_reward_call_per_generation_batch(model_dir, questions, tmp_path):
    # Amortisation: with k steps per generation, one reward call (one message per selected expert)
    # holds k steps' questions, and the k optimizer steps all happen.
    from fedgrpo.training.trainer import build_grpo_trainer, train_grpo

    calls: list[tuple[int, int]] = []

    def reward(prompts, completions, question_id, trainer_state, **kwargs):
        calls.append((trainer_state.global_step, len(completions)))
        return _toy_reward(completions)

    settings = grpo_settings(num_generations=2, prompts_per_step=2, max_steps=4, steps_per_generation=2,
                            max_completion_length=4, save_steps=100)
    assert grpo_config_kwargs(settings, tmp_path)["steps_per_generation"] == 2
    trainer = build_grpo_trainer(model_dir, questions, reward, settings, tmp_path)
    train_grpo(trainer, resume=False)
    assert trainer.state.global_step == 4
    assert calls == [(0, 2 * 2 * 2), (2, 2 * 2 * 2)]


# --- (a) the layout of a reward call --------------------------------------------------------------


@slow
def test_a_reward_call_holds_one_step_of_consecutive_groups(observed, questions):
    by_id = {q.question_id: q for q in questions}
    # One call per optimizer step, made before that step's update.
    assert [c["step"] for c in observed.calls] == [0, 1]
    for call in observed.calls:
        assert len(call["question_id"]) == PROMPTS_PER_STEP * NUM_GENERATIONS
        groups = group_by_question(call["question_id"], NUM_GENERATIONS)  # raises otherwise
        assert len(groups) == PROMPTS_PER_STEP
        for qid, block in groups:
            # Every column of a completion belongs to the same dataset row.
            assert set(call["prompts"][block]) == {render_prompt(by_id[qid].question)}
            assert set(call["domain"][block]) == {by_id[qid].domain}
        # The other keyword arguments TRL 1.16 passes (besides prompts, completions, question_id,
        # domain, trainer_state), which a reward function must accept.
        assert call["kwargs"] == ["completion_ids", "log_extra", "log_metric"]


@slow
def test_questions_follow_trls_seeded_permutation(observed, questions):
    # RepeatSampler: randperm(len(dataset), seed) cut into chunks of prompts_per_step, one per step.
    order = [questions[i].question_id for i in _permutation(len(questions), observed.settings.seed)]
    seen = [
        [qid for qid, _ in group_by_question(c["question_id"], NUM_GENERATIONS)]
        for c in observed.calls
    ]
    assert seen == [order[0:3], order[3:6]]


# --- (b) the advantages TRL used ------------------------------------------------------------------


@slow
def test_logged_advantages_are_the_ones_trl_trained_on(observed):
    for step, used in zip((1, 2), observed.used_advantages, strict=True):
        logged = observed.logged_completions(step)
        # The parquet rows are in reward-call order, like the batch before TRL shuffles it.
        np.testing.assert_allclose(logged["advantage"].to_numpy(), used, rtol=0, atol=1e-6)
        assert list(logged["prompt"]) == observed.calls[step - 1]["prompts"]


@slow
def test_trl_advantages_equal_joint_federated_advantages(observed):
    from fedgrpo.core.advantage import federated_advantages

    scale = observed.settings.scale_rewards
    for step, call in enumerate(observed.calls, start=1):
        rewards = np.array([np.nan if r is None else r for r in call["rewards"]], dtype=np.float64)
        # Completions [m*G, (m+1)*G) of a question are expert m's block: (P, M, G) in C order.
        expected = federated_advantages(
            rewards.reshape(PROMPTS_PER_STEP, EXPERTS, PER_EXPERT),
            pooling="joint",
            scale_rewards=scale,
        ).reshape(-1)
        logged = observed.logged_completions(step)
        # TRL computes in float32; 1e-4 is far below the advantages' spacing (~0.5).
        np.testing.assert_allclose(logged["advantage"].to_numpy(), expected, rtol=0, atol=1e-4)


# --- (c) None rewards -----------------------------------------------------------------------------


@slow
def test_none_reward_is_nan_and_gets_advantage_zero(observed):
    for step, call in enumerate(observed.calls, start=1):
        logged = observed.logged_completions(step)
        missing = np.array([r is None for r in call["rewards"]])
        assert missing.any()  # the toy reward leaves every fifth completion unscored
        reward_column = logged["federated_reward"].to_numpy()  # TRL names it after the function
        assert np.isnan(reward_column[missing]).all()
        assert (logged["advantage"].to_numpy()[missing] == 0).all()
        # The baseline leaves NaN out: per group the scored completions' advantages still sum to 0
        # (scale "group": centring then dividing by one positive number per group).
        advantages = logged["advantage"].to_numpy()
        for _, block in group_by_question(call["question_id"], NUM_GENERATIONS):
            assert abs(advantages[block][~missing[block]].sum()) < 1e-4


# --- (d) the training step ------------------------------------------------------------------------


@slow
def test_a_step_logs_a_loss_and_changes_every_trainable_parameter(observed):
    losses = [h["loss"] for h in observed.trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and np.isfinite(losses).all()  # logging_steps=1: one loss per step
    for name, param in observed.trainer.model.named_parameters():
        if param.requires_grad:
            assert not np.array_equal(observed.before[name].numpy(), param.detach().numpy()), name


@slow
def test_cpu_safe_defaults_reach_the_trainer(observed):
    import torch

    args = observed.trainer.args
    # GRPOConfig would otherwise pick bf16, activation checkpointing, lr 1e-6 and 10-step logs.
    assert args.bf16 is False
    assert args.gradient_checkpointing is False and args.activation_checkpointing is False
    assert args.use_cpu == (not torch.cuda.is_available())
    assert args.learning_rate == 1e-4 and args.lr_scheduler_type.value == "constant"
    assert args.logging_steps == 1
    # The per-device batch counts completions: one step's questions times their groups.
    assert args.per_device_train_batch_size == PROMPTS_PER_STEP * NUM_GENERATIONS
    assert (args.loss_type, args.scale_rewards, args.beta) == ("dr_grpo", "group", 0.0)


# --- checkpoints and resume -----------------------------------------------------------------------


class _Interrupted(Exception):
    pass


@slow
def test_interrupted_run_resumes_from_its_checkpoint_to_max_steps(model_dir, questions, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from fedgrpo.training.trainer import build_grpo_trainer, train_grpo

    steps_seen: list[int] = []
    groups_seen: list[list[str]] = []

    def reward(completions, question_id, trainer_state, **kwargs):
        steps_seen.append(trainer_state.global_step)
        groups_seen.append([qid for qid, _ in group_by_question(question_id, NUM_GENERATIONS)])
        return _toy_reward(completions)

    class InterruptAfterSaving(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise _Interrupted  # as a crash right after checkpoint-2 was written

    class FirstWeights(TrainerCallback):
        weights = None

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if FirstWeights.weights is None:
                FirstWeights.weights = {k: v.clone() for k, v in model.state_dict().items()}

    settings = grpo_settings(
        num_generations=NUM_GENERATIONS, prompts_per_step=PROMPTS_PER_STEP, max_steps=3,
        max_completion_length=8, save_steps=2, seed=5,
    )
    first = build_grpo_trainer(model_dir, questions, reward, settings, tmp_path)
    first.add_callback(InterruptAfterSaving())
    with pytest.raises(_Interrupted):
        train_grpo(first, resume=True)  # resume=True with no checkpoint yet starts fresh
    assert steps_seen == [0, 1]
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"

    second = build_grpo_trainer(model_dir, questions, reward, settings, tmp_path)
    second.add_callback(FirstWeights())
    output = train_grpo(second, resume=True)
    # Only the missing step ran: no restart from step 0.
    assert steps_seen == [0, 1, 2]
    assert output.global_step == second.state.global_step == 3
    # It started from checkpoint-2's weights, which differ from the base model's.
    saved = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    base = load_file(model_dir / "model.safetensors")
    assert any(not np.array_equal(base[k].numpy(), saved[k].numpy()) for k in saved)
    for name, tensor in saved.items():
        assert np.array_equal(FirstWeights.weights[name].numpy(), tensor.numpy()), name
    # And it drew the questions an uninterrupted run would have: the permutation's third chunk.
    order = [questions[i].question_id for i in _permutation(len(questions), settings.seed)]
    assert groups_seen == [order[0:3], order[3:6], order[6:9]]

