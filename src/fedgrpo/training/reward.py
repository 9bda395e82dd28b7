"""The federated reward hook TRL calls: TRL's columns -> routing -> transport -> rewards in TRL's order.

TRL generates `num_generations = M*G` candidates per question and hands each question's candidates
over consecutively. The hook asks with full candidate texts and gets one reward per candidate back;
what travels to each expert (its question's distinct final answers, or the texts compressed, with
rewards packed) is the transport's business (`transport.session`). They are split into one contiguous block per selected expert, in routing order:
with the paper's M experts, candidates [m*G, (m+1)*G) go to the m-th; with fewer (a competence
threshold kept k < M), the M*G candidates are split into k blocks as equal as possible. TRL's group
normalisation spans the whole federated group - exactly `core.advantage.federated_advantages` with
joint pooling (tested as an invariant).

The reward returned per candidate is accuracy_weight * expert reward + format_weight * format reward
+ tag_weight * tag count reward (the last two computed here, by the prompt style), where the expert
reward is the raw reward (the expert's reply, or the gold verifier's verdict) or, with `competence`,
the raw reward shrunk by the expert's competence (`core.aggregate.shrink_to_competent_mean`).
It is one reward function on purpose: a missing expert reply must make the *whole* reward NaN (advantage
0, baseline untouched); with two TRL reward functions, TRL's NaN-skipping sum would keep the format part.

The re-check's probes (`probes`: question ids; `transport.recheck`) are routed and scored as any
question, so their experts cannot tell them apart, but their whole reward is None (advantage 0): the
experts' rewards on them are evidence about the experts, read by the re-check, and the server's own
gold answers judge experts only, never teach the policy (a gold reward there would be ground-truth
GRPO on a share of the questions, which the no-answer setting does not have). The cost is the share
of the samples that carry no gradient.

TRL's public route: `__call__` is ``async def``, so TRL awaits it on its reward event loop (the
round trip runs in a worker thread of that loop), and a missing reward is ``None``.

Deferred mode (``overlap_rewards``, driven by `training.overlap`): the TRL call only *stages* the
batch and returns placeholder rewards; `submit` then sends the staged requests from one background
thread and `resolve` waits for the real rewards when the batch is about to be trained. The rewards,
the RewardLog entry and the failure list are exactly those of a synchronous call; only the moment
the round trip happens moves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedgrpo.core.aggregate import aggregate_replicated, shrink_to_competent_mean
from fedgrpo.data.prompts import PromptStyle, completion_text
from fedgrpo.data.tasks import Question
from fedgrpo.transport.base import ExpertTransport
from fedgrpo.types import ExpertFailure, FailureKind, ScoreItem, ScoreRequest

Rewards = list[float | None]  # one per candidate, TRL order; None = missing (NaN in TRL)


@dataclass
class RewardLog:
    """What the hook saw, per call: for the reward curve and the failure report."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    failures: list[ExpertFailure] = field(default_factory=list)


@dataclass(frozen=True)
class _ServerSide:
    """The rewards the server computes itself, unweighted, one per candidate: the style's format
    reward and tag count reward (0 outside chat style with tags)."""

    format: np.ndarray
    tags: np.ndarray


@dataclass(frozen=True)
class _Staged:
    """One reward call's batch, held in deferred mode until `FederatedReward.submit` sends it."""

    groups: list[tuple[str, slice]]
    completions: tuple[str, ...]
    shape: _ServerSide


@dataclass(frozen=True)
class _Scored:
    """What the scorers returned for one batch, before logging."""

    raw_reward: np.ndarray  # the expert's (or verifier's) reward per candidate, TRL order; NaN = missing
    failures: tuple[ExpertFailure, ...] = ()
    all_failed: bool = False  # every asked expert failed: no reply at all


@dataclass(frozen=True)
class PendingRewards:
    """A submitted batch: its step label, its format rewards and the future of its scores."""

    step: int
    groups: list[tuple[str, slice]]
    shape: _ServerSide
    future: cf.Future[_Scored]


class FederatedReward:
    """Callable passed to TRL's `reward_funcs`."""

    __name__ = "federated_reward"  # TRL names logged metrics after the function

    def __init__(
        self,
        questions: Mapping[str, Question],
        routing: Mapping[str, Sequence[str]] | None,
        transport: ExpertTransport | None,
        *,
        group_size: int,
        style: PromptStyle,
        accuracy_weight: float,
        format_weight: float,
        tag_weight: float,
        group_by_question: Callable[[Sequence[str], int], list[tuple[str, slice]]],
        gold_scorer: Callable[[Question, str], float] | None = None,
        competence: Mapping[str, Sequence[float]] | None = None,
        deferred: bool = False,
        debias: Callable[[np.ndarray], np.ndarray] | None = None,
        replicate: str | None = None,
        probes: frozenset[str] = frozenset(),
    ) -> None:
        """`gold_scorer` replaces the experts with a local verifier on gold answers (ground-truth mode).

        `competence` (question id -> each routed expert's competence, aligned with `routing`) turns
        on competence weighting of the expert rewards.

        `deferred`: TRL's call stages the batch and returns placeholders; `submit` and `resolve`
        deliver the real rewards (see the module docstring).

        `debias` maps each expert's released rewards to estimates of the true ones (local DP with
        randomised response, `privacy.plan.PrivacyPlan.reward_debias`); NaN stays NaN.

        `replicate` (an aggregation of `core.aggregate.ROBUST_AGGREGATIONS`): every selected expert
        scores all of its question's candidates and their rewards are combined per candidate;
        None: each expert scores its own block.

        `probes`: question ids of the re-check's probes, scored but rewarded None (module docstring).
        """
        if gold_scorer is None and (routing is None or transport is None):
            raise ValueError("expert rewards need a routing and a transport")
        self.questions = questions
        self.routing = routing
        self.transport = transport
        self.group_size = group_size  # TRL's num_generations: M*G in both modes (equal compute)
        self.competence = competence
        self.style = style
        self.accuracy_weight = accuracy_weight
        self.format_weight = format_weight
        self.tag_weight = tag_weight
        self.group_by_question = group_by_question
        self.gold_scorer = gold_scorer
        self.deferred = deferred
        self.debias = debias
        self.replicate = replicate
        self.probes = probes
        self.budget_spent_at: int | None = None  # the step at which every asked client's budget was spent
        self.log = RewardLog()
        self.calls = 0
        self.wait_seconds = 0.0  # time training blocked for expert rewards: the round trip, or `resolve`
        self._staged: _Staged | None = None
        # One thread: requests leave in generation order and at most one round trip runs at a time,
        # so a transport never sees two concurrent `score` calls (none of them is re-entrant).
        self._sender: cf.ThreadPoolExecutor | None = None

    async def __call__(self, prompts: Sequence[str], completions: Sequence[str], question_id: Sequence[str],
                       trainer_state: Any = None, **_: Any) -> Rewards:
        step = int(getattr(trainer_state, "global_step", self.calls))
        self.calls += 1
        groups = self.group_by_question(list(question_id), self.group_size)
        completions = [completion_text(c) for c in completions]  # chat style: TRL passes messages
        shape = _ServerSide(np.array([self.style.format_reward(c) for c in completions]),
                            np.array([self.style.tag_reward(c) for c in completions]))
        if self.deferred:
            if self._staged is not None:
                raise RuntimeError("a deferred reward call was never submitted (a trainer bug)")
            self._staged = _Staged(groups, tuple(completions), shape)
            # Placeholders only: the overlapped trainer overwrites the advantages TRL derives from
            # them, and its reward metrics, with those of the real rewards (training.overlap).
            return [0.0] * len(completions)
        if self.gold_scorer is not None:  # a local verifier: no round trip to wait for
            return self._finish(step, groups, self._raw_rewards(step, groups, completions), shape)
        started = time.perf_counter()
        scored = await asyncio.to_thread(self._raw_rewards, step, groups, completions)
        self.wait_seconds += time.perf_counter() - started
        return self._finish(step, groups, scored, shape)

    def submit(self, step: int) -> PendingRewards:
        """Send the staged batch's requests, labelled `step` (the first step that trains on it).

        Expert requests go out from the background thread; ground truth is scored here at once (a
        local verifier: no round trip to hide, and scoring on this thread keeps runs deterministic).
        """
        staged, self._staged = self._staged, None
        if staged is None:
            raise RuntimeError("submit without a staged reward call (a trainer bug)")
        if self.gold_scorer is not None:
            future: cf.Future[_Scored] = cf.Future()
            future.set_result(self._raw_rewards(step, staged.groups, staged.completions))
        else:
            if self._sender is None:
                self._sender = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-send")
            future = self._sender.submit(self._raw_rewards, step, staged.groups, staged.completions)
        return PendingRewards(step, staged.groups, staged.shape, future)

    def resolve(self, pending: PendingRewards) -> Rewards:
        """Wait for a submitted batch's rewards; log them as a synchronous call would have."""
        started = time.perf_counter()
        scored = pending.future.result()  # re-raises what the round trip raised
        self.wait_seconds += time.perf_counter() - started
        return self._finish(pending.step, pending.groups, scored, pending.shape)

    def close(self) -> None:
        """Stop the background sender (deferred mode); an unfinished request is abandoned."""
        if self._sender is not None:
            self._sender.shutdown(wait=False, cancel_futures=True)
            self._sender = None

    def _raw_rewards(self, step: int, groups: list[tuple[str, slice]], completions: Sequence[str]) -> _Scored:
        """The raw reward per candidate (NaN = missing) and the experts that failed.

        Touches no state of `self` but the transport, so it may run on the background thread.
        """
        if self.gold_scorer is None:
            return self._expert_rewards(step, groups, completions)
        raw_reward = np.full(len(completions), np.nan)  # one per candidate, TRL order
        for qid, span in groups:
            q = self.questions[qid]
            raw_reward[span] = [self.gold_scorer(q, c) for c in completions[span]]
        return _Scored(raw_reward)

    def _finish(self, step: int, groups: list[tuple[str, slice]], scored: _Scored,
                shape: _ServerSide) -> Rewards:
        """Log one batch and combine its parts into the reward TRL sees."""
        self.log.failures.extend(scored.failures)
        if scored.all_failed and all(f.kind is FailureKind.BUDGET_SPENT for f in scored.failures):
            # Local DP: no client may release anything more. The batch carries no reward (advantage
            # 0, no update) and the train phase stops after this step, keeping what was learnt.
            if self.budget_spent_at is None:
                self.budget_spent_at = step
        elif scored.all_failed:
            raise RuntimeError(
                f"every expert failed at step {step}: "
                + "; ".join(f"{f.expert_id}: {f.reason}" for f in scored.failures)
            )
        expert_reward = self._weighted_by_competence(groups, scored.raw_reward)
        is_probe = np.zeros(len(expert_reward), dtype=bool)  # (N,)
        for qid, span in groups:
            is_probe[span] = qid in self.probes
        expert_reward = np.where(is_probe, np.nan, expert_reward)  # evidence for the re-check only: no signal
        reward = (self.accuracy_weight * expert_reward + self.format_weight * shape.format
                  + self.tag_weight * shape.tags)  # NaN stays NaN
        self.log.steps.append({
            "step": step,
            "accuracy_reward": _nanmean(expert_reward),
            "format_reward": float(shape.format.mean()) if len(shape.format) else math.nan,
            "tag_reward": float(shape.tags.mean()) if len(shape.tags) else math.nan,
            "reward": _nanmean(reward),
            "missing": int(np.isnan(scored.raw_reward[~is_probe]).sum()),
            "probes": int(is_probe.sum()),
        })
        return [None if math.isnan(r) else float(r) for r in reward]

    def _weighted_by_competence(self, groups: list[tuple[str, slice]], raw_reward: np.ndarray) -> np.ndarray:
        """The raw rewards, each question's blocks shrunk by their experts' competence when asked."""
        if self.competence is None:
            return raw_reward
        out = raw_reward.copy()
        for qid, span in groups:
            local = expert_blocks(slice(0, span.stop - span.start), len(self.competence[qid]))
            out[span] = shrink_to_competent_mean(raw_reward[span], local, self.competence[qid])
        return out

    def _expert_rewards(self, step: int, groups: list[tuple[str, slice]], completions: Sequence[str]) -> _Scored:
        assert self.routing is not None and self.transport is not None
        items: dict[str, list[ScoreItem]] = {}
        spans: dict[str, list[tuple[slice, int]]] = {}  # expert -> (its candidates, its column)
        width = 1
        for qid, span in groups:
            q = self.questions[qid]
            experts = self.routing[qid]
            if self.replicate is not None:  # every (distinct) selected expert scores every candidate
                experts = tuple(dict.fromkeys(experts))
                blocks = [(span, column) for column in range(len(experts))]
                width = max(width, len(experts))
            else:
                blocks = [(block, 0) for block in expert_blocks(span, len(experts))]
            for expert_id, (block, column) in zip(experts, blocks, strict=True):
                items.setdefault(expert_id, []).append(
                    ScoreItem(qid, q.generator, q.question, tuple(completions[block])))
                spans.setdefault(expert_id, []).append((block, column))
        requests = {e: ScoreRequest(step, tuple(its)) for e, its in items.items()}
        results = self.transport.score_round(step, requests)
        by_expert = np.full((len(completions), width), np.nan)  # (N, experts per candidate)
        for expert_id, reply in results.replies.items():
            flat = np.asarray(reply.rewards, dtype=float)
            if self.debias is not None:
                flat = self.debias(flat)
            offset = 0
            for block, column in spans[expert_id]:
                n = block.stop - block.start
                by_expert[block, column] = flat[offset:offset + n]
                offset += n
        raw_reward = by_expert[:, 0] if self.replicate is None else aggregate_replicated(by_expert, self.replicate)
        return _Scored(raw_reward, tuple(results.failures), bool(results.failures) and not results.replies)


def expert_blocks(span: slice, parts: int) -> list[slice]:
    """`span` (one question's candidates) cut into `parts` contiguous blocks, one per selected expert
    in routing order, sizes as equal as possible (the first ones one larger): M*G candidates for M
    experts give M blocks of G.

    >>> expert_blocks(slice(8, 16), 2)
    [slice(8, 12, None), slice(12, 16, None)]
    >>> [b.stop - b.start for b in expert_blocks(slice(0, 8), 3)]
    [3, 3, 2]
    """
    size = span.stop - span.start
    if not 1 <= parts <= size:
        raise ValueError(f"cannot split {size} candidates among {parts} experts")
    base, extra = divmod(size, parts)
    bounds = [span.start]
    for k in range(parts):
        bounds.append(bounds[-1] + base + (1 if k < extra else 0))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
