"""The train phase of a run: the reward function, TRL's trainer, progress, the final model.

`train_policy` trains the server policy from the prepared base on the training pool (and, with the
re-check on, its probes mixed in: `training.calibrate.training_questions`): with expert rewards
through `transport` (the run's routing decides who scores what), or with a local verifier on the
gold answers in ground-truth mode (`transport` None). It resumes from the last checkpoint in
``out/checkpoints`` and always stops the reward's background sender, on every exit path.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.gym import is_correct
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.privacy.plan import PrivacyPlan
from fedgrpo.progress import ProgressSink
from fedgrpo.training.calibrate import Routing, mixed_probes, training_questions
from fedgrpo.training.prepare import Prepared
from fedgrpo.training.reward import FederatedReward
from fedgrpo.transport.base import ExpertTransport
from fedgrpo.types import ExpertFailure


@dataclass(frozen=True)
class TrainedPolicy:
    """What the train phase leaves: the model and what training saw."""

    final_dir: Path
    reward_curve: list[dict[str, Any]]  # {"step", "reward", "reward_std"} per logged step
    step_seconds: list[float]  # per optimizer step of this session (the first includes warm-up)
    failures: tuple[ExpertFailure, ...]  # every failed scoring request
    reward_wait_s: float  # seconds training blocked for rewards
    overlap_rewards: bool
    budget_spent_at: int | None = None  # local DP: the step at which training stopped, every budget spent


def gold_scorer(style: PromptStyle, question: Question, completion: str) -> float:
    """Ground-truth mode's raw reward: 1 when the completion's answer (read in `style`) is right."""
    return 1.0 if is_correct(question, style.extract(completion)) else 0.0


def build_reward(prepared: Prepared, transport: ExpertTransport | None, routing: Routing | None, *,
                 overlap: bool) -> FederatedReward:
    """The reward TRL calls: expert rewards through `transport` and `routing`, or (both None) the
    gold verifier. The hook reads gold answers only in ground-truth mode: an expert-reward run
    trains on questions whose answer is None. The re-check's probes among them train nothing."""
    probes = frozenset(q.question_id for q in mixed_probes(prepared))
    return make_reward(prepared.config, training_questions(prepared), transport, routing,
                       gold=prepared.config.data.use_ground_truth, overlap=overlap, probes=probes)


def gold_reward(config: FedGRPOConfig, questions: Sequence[Question]) -> FederatedReward:
    """Ground-truth mode's reward on any labelled `questions` (a baseline's own labels)."""
    return make_reward(config, questions, None, None, gold=True, overlap=False)


def make_reward(config: FedGRPOConfig, questions: Sequence[Question], transport: ExpertTransport | None,
                routing: Routing | None, *, gold: bool, overlap: bool,
                probes: frozenset[str] = frozenset()) -> FederatedReward:
    from fedgrpo.training.trainer import group_by_question

    fed, train = config.federation, config.train
    style = PromptStyle.from_config(config.prompts)
    return FederatedReward(
        {q.question_id: q for q in questions}, routing.experts if routing else None, transport,
        group_size=fed.experts_per_question * fed.generations_per_expert, style=style,
        accuracy_weight=train.accuracy_weight, format_weight=train.format_weight,
        tag_weight=config.prompts.tag_weight, group_by_question=group_by_question,
        gold_scorer=functools.partial(gold_scorer, style) if gold else None,
        competence=routing.competence if routing and fed.competence_weighting else None, deferred=overlap,
        debias=None if gold else PrivacyPlan.from_config(config).reward_debias(),
        replicate=fed.robust_aggregation if fed.score_replication and not gold else None, probes=probes,
    )


def train_policy(prepared: Prepared, out: Path, progress: ProgressSink, *,
                 transport: ExpertTransport | None = None, routing: Routing | None = None,
                 on_step: Callable[[], None] = lambda: None) -> TrainedPolicy:
    """GRPO from the prepared server base; `on_step` runs after every optimizer step (the engine
    mirrors its traffic ledger there). Writes ``out/checkpoints`` and ``out/final-model``."""
    from fedgrpo.training.trainer import GRPOSettings, build_grpo_trainer, train_grpo

    config = prepared.config
    settings = GRPOSettings.from_config(config)
    reward = build_reward(prepared, transport, routing, overlap=settings.overlap_rewards)
    questions = training_questions(prepared)
    steps = config.train.train_steps
    try:
        trainer = build_grpo_trainer(prepared.server_dir, questions, reward, settings, out / "checkpoints")
        with progress.phase(f"GRPO training ({steps} steps)", steps) as advance:
            step_ends = _report_steps(trainer, lambda: (advance(1), on_step()),
                                      should_stop=lambda: reward.budget_spent_at is not None)
            train_grpo(trainer, resume=True)
    finally:
        reward.close()  # overlap's background sender; nothing is in flight after the last step
    final_dir = out / "final-model"
    save_policy(trainer, final_dir)
    history = [h for h in trainer.state.log_history if "reward" in h or any(k.startswith("rewards/") for k in h)]
    return TrainedPolicy(
        final_dir=final_dir,
        reward_curve=[{"step": h.get("step"), "reward": h.get("reward"), "reward_std": h.get("reward_std")}
                      for h in history],
        step_seconds=[round(b - a, 4) for a, b in zip(step_ends, step_ends[1:])],
        failures=tuple(reward.log.failures),
        reward_wait_s=round(reward.wait_seconds, 4),
        overlap_rewards=settings.overlap_rewards,
        budget_spent_at=reward.budget_spent_at,
    )


def save_policy(trainer: Any, final_dir: Path) -> None:
    """The trained policy as a plain model directory (what evaluation and every later run load). A
    LoRA policy is also kept as its adapter (``final-adapter``), then merged into its base."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model
        model.save_pretrained(str(final_dir.parent / "final-adapter"))
        model = model.merge_and_unload()
    model.save_pretrained(str(final_dir))
    trainer.processing_class.save_pretrained(str(final_dir))


def _report_steps(trainer: Any, after_step: Callable[[], Any],
                  should_stop: Callable[[], bool] = lambda: False) -> list[float]:
    """Replace TRL's tqdm bar and printed log dicts (the logs stay in trainer.state.log_history and
    every checkpoint) with `after_step`; returns the list of step end times it fills. Training ends
    after a step at which `should_stop()` holds (every client's privacy budget spent)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    step_ends: list[float] = [time.perf_counter()]

    class _AfterStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            after_step()
            step_ends.append(time.perf_counter())
            if should_stop():
                control.should_training_stop = True

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_AfterStep())
    return step_ends
