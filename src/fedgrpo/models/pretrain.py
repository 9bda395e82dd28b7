"""Supervised training on (prompt, completion) pairs: the tiny server's public pre-training and each
client's expert fine-tuning. Plain torch: TRL is kept for the GRPO update, where it earns its import.

Loss on completion tokens only (the prompt is context, not a target). AdamW with betas (0.9, 0.98),
weight decay 0.01, linear warm-up over the first 10% of steps,
gradient clipping at 1.0 - the settings measured in shared/design/tiny-recipe.md; the learning rate
is constant after warm-up (server base) or decays by a cosine (experts), see `train_supervised`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[Any, str]]) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels per pair: prompt completion <eos>, labels only on completion + <eos>. A
    prompt is text (the tokenizer adds what it adds, e.g. <bos>) or chat messages, rendered by the
    chat template with its generation prompt, as at generation time."""
    encoded = []
    for prompt, completion in pairs:
        if isinstance(prompt, str):
            p = tokenizer(prompt)["input_ids"]
        else:
            p = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"])
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((p + c, [IGNORE_INDEX] * len(p) + c))
    return encoded


def _collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y) in enumerate(batch):  # right padding: training needs no generation alignment
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


SCHEDULES = ("cosine", "constant")


def lr_factor(step: int, total: int, schedule: str = "cosine") -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to 10% of the peak or constant."""
    warmup = max(1, total // 10)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_supervised(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    schedule: str = "cosine",
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train in place for `steps` optimizer steps; return the loss per step.

    `schedule` "cosine" settles the model (experts: be as right as possible); "constant" stops it
    mid-learning, less sharply peaked, which is what later RL needs (the server base: measured, GRPO
    with ground-truth rewards gained +4.4 points in 150 steps from a constant-schedule base and
    nothing from a cosine-annealed one of equal greedy accuracy).
    """
    import torch

    if steps == 0 or not pairs:
        return []
    data = encode_pairs(tokenizer, pairs)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    step_once = _optimizer_step(model, tokenizer, learning_rate, lambda s: lr_factor(s, steps, schedule))
    model.train()
    order: list[int] = []
    losses = []
    for step in range(steps):
        if len(order) < batch_size:  # reshuffle per epoch; a batch never mixes two epochs' orders
            fresh = list(range(len(data)))
            rng.shuffle(fresh)
            order = fresh * max(1, math.ceil(batch_size / len(fresh)))
        batch, order = [data[i] for i in order[:batch_size]], order[batch_size:]
        losses.append(step_once(batch))
        if on_step:
            on_step(step + 1, losses[-1])
    model.eval()
    return losses


def _optimizer_step(model: Any, tokenizer: Any, learning_rate: float,
                    lr_lambda: Callable[[int], float]) -> Callable[[list[tuple[list[int], list[int]]]], float]:
    """One supervised optimizer step on an encoded batch, on the model's device (AdamW, clipped
    gradients, the scheduler `lr_lambda`); returns the batch's loss. Shared by both trainers here."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    def step(batch: list[tuple[list[int], list[int]]]) -> float:
        loss = model(**{k: v.to(model.device) for k, v in _collate(batch, tokenizer.pad_token_id).items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


# --- Pre-training to the edge of competence, per domain ------------------------------------------


@dataclass(frozen=True)
class EdgeRule:
    """When each domain's pre-training stops: the rule that puts a base at the edge of competence.

    Every `check_every` steps the model samples answers to a small labelled probe per domain (items
    it is not trained on) and the mean correctness of those samples is measured. A domain whose
    sampled accuracy has reached `target` at a check stops getting fresh batches: from then on it has
    weight `replay` against 1 for a domain still learning, just enough to keep it from being
    forgotten while the others catch up. Training ends when every domain has reached the target, or
    after `max_steps`.

    Why per domain: one global step count cannot put several domains at their edge at once. Measured
    on the default four domains of the time, spelling was at 96% while arithmetic was still at 5%
    after 2,400 steps, and arithmetic's competence appeared between 2,400 and 4,800 steps; a base
    that has converged in a domain leaves RL nothing there, one that never learned a procedure gives
    RL nothing to reinforce. Why a small replay and not 0: without any, spelling fell from 49% to 0%
    sampled within 100 steps of the other domains and came back at once when trained again (a
    controller that stops and restarts a domain oscillated and slowed the others); with 0.1, spelling
    kept learning far past the target (35% -> 74% sampled) while arithmetic caught up.
    """

    target: float
    max_steps: int
    check_every: int = 100
    replay: float = 0.1
    confirm: int = 1  # consecutive checks at or above the target before a domain counts as reached
    # A reached domain whose accuracy falls below target - resume_margin trains at full weight again
    # until it is back at the target; training then ends only at a check where every domain is at
    # its edge (None: a reached domain stays replayed whatever it does).
    resume_margin: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be in (0, 1], got {self.target}")
        if self.resume_margin is not None and not 0 <= self.resume_margin < self.target:
            raise ValueError("resume_margin must be in [0, target)")
        if self.check_every < 1 or self.max_steps < 0 or not 0 <= self.replay <= 1 or self.confirm < 1:
            raise ValueError("check_every must be >= 1, max_steps >= 0, replay in [0, 1] and confirm >= 1")


def domain_weights(reached: Mapping[str, bool], replay: float) -> dict[str, float]:
    """Sampling weight per domain: 1 while learning, `replay` once it has reached the target."""
    return {d: (replay if done else 1.0) for d, done in reached.items()}


def train_to_edge(
    model: Any,
    tokenizer: Any,
    pairs_by_domain: Mapping[str, Sequence[tuple[str, str]]],
    probe: Callable[[Any], Mapping[str, float]],
    rule: EdgeRule,
    *,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
    on_check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Supervised training on several domains, each until its sampled accuracy reaches the target.

    `probe(model)` returns the sampled accuracy per domain (the caller decides on which items and
    how many samples; it must not touch the global random state). The learning rate is constant
    after a warm-up of 100 steps (a base stopped mid-learning, which later RL needs; see
    `train_supervised`). Returns a log: the probe's accuracies and the weights at every check, the
    step at which each domain reached the target (None if never) and the steps trained.
    """
    import torch

    domains = list(pairs_by_domain)
    data = {d: encode_pairs(tokenizer, pairs_by_domain[d]) for d in domains}
    rng = random.Random(seed)
    torch.manual_seed(seed)
    warmup = min(100, max(1, rule.max_steps // 10))
    step_once = _optimizer_step(model, tokenizer, learning_rate, lambda s: min(1.0, (s + 1) / warmup))
    orders: dict[str, list[int]] = {d: [] for d in domains}

    def draw(domain: str) -> tuple[list[int], list[int]]:
        if not orders[domain]:  # reshuffle per epoch of this domain
            fresh = list(range(len(data[domain])))
            rng.shuffle(fresh)
            orders[domain] = fresh
        return data[domain][orders[domain].pop()]

    reached: dict[str, int | None] = {d: None for d in domains}
    resumed = {d: False for d in domains}  # reached, fell back below the margin, training again
    streak = {d: 0 for d in domains}
    checks: list[dict[str, Any]] = []

    def check(step: int) -> bool:
        model.eval()
        accuracy = dict(probe(model))
        model.train()
        for d in domains:
            streak[d] = streak[d] + 1 if accuracy[d] >= rule.target else 0
            if reached[d] is None and streak[d] >= rule.confirm:
                reached[d] = step
            elif reached[d] is not None and rule.resume_margin is not None:
                if accuracy[d] < rule.target - rule.resume_margin:
                    resumed[d] = True
                elif accuracy[d] >= rule.target:
                    resumed[d] = False
        weights = domain_weights({d: reached[d] is not None and not resumed[d] for d in domains}, rule.replay)
        checks.append({"step": step, "accuracy": accuracy, "weights": weights})
        if on_check:
            on_check(checks[-1])
        return all(reached[d] is not None and not resumed[d] for d in domains)

    model.train()
    step = 0
    done = check(0) if rule.max_steps else True
    while not done and step < rule.max_steps:
        weights = checks[-1]["weights"]
        names = [d for d in domains if weights[d] > 0]
        picks = rng.choices(names, weights=[weights[d] for d in names], k=batch_size)
        loss = step_once([draw(d) for d in picks])
        step += 1
        if on_step:
            on_step(step, loss)
        if step % rule.check_every == 0 or step == rule.max_steps:
            done = check(step)
    model.eval()
    return {"steps": step, "reached": reached, "checks": checks}
