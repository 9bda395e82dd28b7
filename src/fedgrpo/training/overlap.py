"""One-step off-policy GRPO (``overlap_rewards``): batch k+1's reward round trip overlaps training on k.

Why. TRL 1.16 calls the reward function synchronously inside ``_generate_and_score_completions``,
so the server idles for a whole expert round trip at every generation batch (on a Flower Deployment
1-4 s, against 0.4-0.5 s per optimizer step).

Schedule. With ``ge = steps_per_generation * num_iterations`` optimizer steps per generation batch,
at each generation point j (global step s):

1. generate batch j+1 from the prompts the dataloader will hand over at point j+1 (read ahead,
   see `get_batch_samples`) with the current policy, and send its scoring requests from the
   reward's background thread;
2. wait for batch j's rewards (sent one point earlier), compute its advantages with
   `core.advantage.federated_advantages` (joint pooling: tested equal to TRL's own computation),
   and train the next ``ge`` steps on it exactly as TRL would (same shuffle and split).

So batch j+1's round trip runs while the server generates batch j+1 and trains on batch j. At the
first point of a run, of a resumed run and of a new epoch nothing is in flight: batch j is generated
and waited for there (no overlap at that point). No batch is generated that would not be trained:
the last point reads nothing ahead.

Soundness. Batch j+1 is sampled by the policy one generation batch older than the one that trains
on it. TRL's clipped importance ratio pi_theta / pi_old corrects this only if ``pi_old`` is the
*sampling* policy; TRL computes those log-probabilities (``old_per_token_logps``) at generation time
only when generation and optimizer steps are misaligned (``gradient_accumulation_steps %
generate_every != 0``) or under vLLM, and otherwise takes the ratio as exactly 1. `_sampling_logps`
computes them right after generation, with TRL's own function, whenever TRL did not.

Mechanism, and why a subclass. The reward hook runs in deferred mode (`training.reward`): TRL's call
stages the batch and gets placeholder rewards back; the real ones replace TRL's advantages and
reward metrics before the batch is shuffled for the loss. Only ``_prepare_inputs``'s train branch
(its ~10 lines copied; they decide when to generate) and ``get_batch_samples`` (to read the next
prompts ahead) are overridden; TRL's generation, loss and checkpointing run unchanged. An ``async
def`` reward function does not help: TRL awaits it inside the same call. TRL's experimental
``AsyncGRPOTrainer`` overlaps generation with training, but needs a vLLM server and its own
rollout worker, which the CPU recipe and the tiny models do not have.

Logged metrics. ``reward``, ``reward_std``, ``frac_reward_zero_std`` and ``rewards/<name>/*`` at a
step describe the batch trained at that step (real rewards); the completions table
(``log_completions``) shows that batch with the advantages it trained on. TRL's other generation
metrics (completion lengths, ``num_tokens``) describe the batch *generated* at that step, one
generation batch ahead of the one trained.

Limits (refused by `check_overlap_args`): one process, ``gradient_accumulation_steps = 1``, no TRL
evaluation during training, TRL's default ``multi_objective_aggregation``, one reward function.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    nanstd,
    shuffle_sequence_dict,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from fedgrpo.core.advantage import federated_advantages
from fedgrpo.errors import ConfigError


class DeferredReward(Protocol):
    """A reward function in deferred mode (`training.reward.FederatedReward(deferred=True)`)."""

    def submit(self, step: int) -> Any:
        """Send the batch staged by the last call, labelled `step`; return a handle."""
        ...

    def resolve(self, handle: Any) -> list[float | None]:
        """Block until the handle's rewards arrived; one per candidate, TRL order."""
        ...


def check_overlap_args(args: Any, reward_fn: Any) -> None:
    """Refuse, with the fix, the GRPOConfig settings the overlapped schedule does not support."""
    if not (callable(getattr(reward_fn, "submit", None)) and callable(getattr(reward_fn, "resolve", None))
            and getattr(reward_fn, "deferred", False)):
        raise ConfigError("overlap_rewards needs a deferred reward function: FederatedReward(deferred=True)")
    if args.gradient_accumulation_steps != 1:
        # The read-ahead assumes the trainer fetches one dataloader item per optimizer step.
        raise ConfigError("overlap_rewards needs gradient_accumulation_steps=1; use steps_per_generation "
                          "to amortise instead")
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no":
        raise ConfigError("overlap_rewards does not support TRL evaluation during training; set eval_strategy=no")
    if args.multi_objective_aggregation != "sum_then_normalize":
        raise ConfigError("overlap_rewards computes TRL's sum_then_normalize advantages; unset "
                          "multi_objective_aggregation")


@dataclass
class _Batch:
    """A generated batch whose rewards were requested: TRL's output with placeholder advantages."""

    rows: list[dict[str, Any]]  # the dataloader's generation batch it was generated from
    output: dict[str, Any]  # TRL's `_generate_and_score_completions` output (+ old_per_token_logps)
    pending: Any  # the deferred reward's handle
    logs: dict[str, Any]  # TRL's completions-table entries of this batch (prompts, completions, extra)


class OverlappedGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose reward round trips overlap training, one generation batch off-policy."""

    def __init__(self, *args: Any, deferred_reward: DeferredReward, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_overlap_args(self.args, deferred_reward)
        if self.accelerator.num_processes != 1 or len(self.reward_funcs) != 1:
            raise ConfigError("overlap_rewards supports one process and one reward function")
        self._deferred = deferred_reward
        self._in_flight: _Batch | None = None  # the next generation batch, its rewards requested
        self._epoch_iterator: Iterator[Any] | None = None
        self._read_ahead: deque[Any] = deque()  # dataloader items fetched early, not yet handed over

    # -- reading the next prompts ahead ------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """The Trainer's own fetch, served first from the items `_peek_next_rows` read ahead.

        The sequence of items the Trainer sees is unchanged (same order, same epoch end), so its step
        counting, data skipping on resume and epoch boundaries are untouched.
        """
        if epoch_iterator is not self._epoch_iterator:
            # A new epoch, a resume or another train() call. Within a run nothing read ahead is left
            # by then (a read-ahead never passes max_steps, and one that hits the epoch's end keeps
            # what it fetched, handed over before the end); anything else belongs to the old
            # iterator, and so does a batch generated from it.
            self._epoch_iterator = epoch_iterator
            self._read_ahead.clear()
            self._in_flight = None
        batch_samples = []
        for _ in range(num_batches):
            if self._read_ahead:
                batch_samples.append(self._read_ahead.popleft())
                continue
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        return batch_samples, self._get_num_items_in_batch(batch_samples, device)

    def _peek_next_rows(self, generate_every: int) -> list[dict[str, Any]] | None:
        """The generation batch of the next generation point, or None when this epoch has none.

        TRL's RepeatSampler hands each generation batch over ``generate_every`` times in a row, one
        item per optimizer step (gradient accumulation 1), so the next point's batch is
        ``generate_every`` items past the current one. Nothing is read ahead at a generation point
        (the previous read-ahead has been handed over by then), whatever the alignment of a resume.
        """
        assert self._epoch_iterator is not None
        while len(self._read_ahead) < generate_every:
            try:
                self._read_ahead.append(next(self._epoch_iterator))
            except StopIteration:
                return None  # the epoch ends first: the next epoch starts without a batch in flight
        return self._read_ahead[-1]

    # -- TRL's train branch, with the batch one generation point old -------------------------------

    def _prepare_inputs(self, generation_batch: Any) -> Any:
        if not self.model.training:
            raise RuntimeError("overlap_rewards trains only (evaluation is refused at construction)")
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            # From here to the end: TRL 1.16's train branch, but with the batch generated one
            # point earlier and its real advantages.
            batch = self._next_training_batch(generation_batch, generate_every)
            batch = split_pixel_values_by_grid(batch)
            batch = shuffle_sequence_dict(batch)
            generation_batches = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(b) for b in generation_batches]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _next_training_batch(self, rows: list[dict[str, Any]], generate_every: int) -> dict[str, Any]:
        """Start the next batch's round trip, then return this point's batch with real advantages."""
        step = self.state.global_step
        ready, self._in_flight = self._in_flight, None
        if ready is None:  # first point of a run, a resume or an epoch: generate and wait here
            ready = self._generate_and_request(rows, step)
        elif ready.rows != rows:
            raise RuntimeError(
                f"overlap_rewards: the batch generated ahead for step {step} is not the one the "
                "dataloader handed over (read-ahead out of step; a bug)"
            )
        # Label = the first step that trains on the batch (as in a synchronous run); a batch that no
        # step would train on is never generated.
        next_step = step + generate_every
        if next_step < self.state.max_steps:
            upcoming = self._peek_next_rows(generate_every)
            if upcoming is not None:
                self._in_flight = self._generate_and_request(upcoming, next_step)
        return self._with_real_rewards(ready)

    def _generate_and_request(self, rows: list[dict[str, Any]], step: int) -> _Batch:
        """Generate with the current policy; send the rewards request before anything else."""
        output = self._generate_and_score_completions(rows)  # the reward hook only stages the batch
        pending = self._deferred.submit(step)  # the round trip starts now, in the background
        output = self._sampling_logps(output)
        # TRL just logged the placeholders' reward statistics: drop them; `_with_real_rewards`
        # logs the real ones when the batch is trained.
        for key in self._reward_metric_names():
            self._metrics["train"][key].pop()
        logs = {
            "prompt": list(self._logs["prompt"]),
            "completion": list(self._logs["completion"]),
            "extra": {column: list(values) for column, values in self._logs["extra"].items()},
        }
        return _Batch(rows, output, pending, logs)

    def _sampling_logps(self, output: dict[str, Any]) -> dict[str, Any]:
        """Add the sampling policy's per-token log-probabilities when TRL did not compute them.

        Called right after generation, before any optimizer step, so the model is the one that
        sampled: the loss's importance ratio then compares the training policy with it instead of
        with itself (TRL's aligned-steps shortcut, ratio 1, is wrong once batches are one
        generation old). Same call and batch size as TRL's own computation (text models only).
        """
        if "old_per_token_logps" in output:  # misaligned steps or vLLM: TRL computed them
            return output
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)  # (B, P+C)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)  # (B, P+C)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, output["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size,
            )  # (B, C)
        return {**output, "old_per_token_logps": logps}

    def _with_real_rewards(self, batch: _Batch) -> dict[str, Any]:
        """Wait for the batch's rewards; its output with TRL's advantages of those rewards."""
        rewards = self._deferred.resolve(batch.pending)  # blocks until the replies arrived
        # The reward function's output (already FedGRPO's weighted sum of raw rewards), then times
        # TRL's own reward weight; with one function a NaN (missing) reward stays NaN.
        reward = torch.tensor([math.nan if r is None else r for r in rewards], dtype=torch.float32)  # (B,)
        weighted = reward * self.reward_weights[0].cpu()  # (B,)
        n = self.num_generations
        advantages = federated_advantages(
            weighted.double().numpy().reshape(-1, 1, n),  # (P, 1, N): joint pooling over the group
            pooling="joint", scale_rewards=self.scale_rewards,
        ).reshape(-1)  # (B,), NaN rewards -> 0
        device = batch.output["advantages"].device
        self._log_real_rewards(batch, reward, weighted, advantages)
        return {**batch.output, "advantages": torch.tensor(advantages, dtype=torch.float32, device=device)}

    def _reward_metric_names(self) -> tuple[str, ...]:
        name = self.reward_func_names[0]
        return (f"rewards/{name}/mean", f"rewards/{name}/std", "reward", "reward_std", "frac_reward_zero_std")

    def _log_real_rewards(self, batch: _Batch, reward: torch.Tensor, weighted: torch.Tensor,
                          advantages: Any) -> None:
        """TRL's reward metrics and completions-table entries, from the real rewards (TRL's formulas)."""
        n = self.num_generations
        if self.scale_rewards == "batch":
            std = nanstd(weighted).expand_as(weighted)  # (B,)
        else:
            std = nanstd(weighted.view(-1, n), dim=1)  # (P,): one per group; same mean as per candidate
        values = (torch.nanmean(reward).item(), nanstd(reward).item(), torch.nanmean(weighted).item(),
                  nanstd(weighted).item(), torch.isclose(std, torch.zeros_like(std)).float().mean().item())
        for key, value in zip(self._reward_metric_names(), values, strict=True):
            self._metrics["train"][key].append(value)
        # TRL's table deques hold one generation batch: make it the batch trained now.
        for key in ("prompt", "completion"):
            self._logs[key].clear()
            self._logs[key].extend(batch.logs[key])
        for column in list(self._logs["extra"]):
            self._logs["extra"][column].clear()
        for column, values_ in batch.logs["extra"].items():
            self._logs["extra"][column].extend(values_)
        self._logs["rewards"][self.reward_func_names[0]].clear()
        self._logs["rewards"][self.reward_func_names[0]].extend(reward.tolist())
        self._logs["advantages"].clear()
        self._logs["advantages"].extend(advantages.tolist())
