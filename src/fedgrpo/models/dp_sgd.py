"""DP-SGD fine-tuning of an expert through Opacus: a record-level guarantee for the whole run.

Every value a client ever sends (rewards, calibration bits, answers to probes) is computed from its
expert model; train that model with DP-SGD and all of it is post-processing, costing exactly the
training's (epsilon, delta), however many values are sent.

What runs, as the accountant assumes it:

- **Poisson sampling**: every step each private record joins the batch independently with
  probability q = expected batch / n (drawn from the client's own generator);
- **per-sample clipping**: Opacus's `GradSampleModule` gives each record's gradient of its own loss
  (the mean over its completion tokens; checked against one-at-a-time gradients in the tests, tied
  embeddings included), `DPOptimizer` clips each to norm C;
- **Gaussian noise**: N(0, (sigma C)^2) added to the sum of clipped gradients, which is then divided
  by the expected batch size; sigma is Opacus's calibration (PRV accountant) of the target over the
  planned steps at rate q. The noise uses ``secure_mode`` (Opacus's defence against floating-point
  attacks on the sampler) with a torch generator seeded from the client's secret.

The reported epsilon is Opacus's accountant's for the steps, rate and sigma actually used; the
tests check it against dp-accounting's independent PLD accountant.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from fedgrpo.models.pretrain import IGNORE_INDEX, _collate, encode_pairs, lr_factor

ACCOUNTANT = "prv"


def noise_multiplier(epsilon: float, delta: float, sampling_rate: float, steps: int) -> float:
    """Opacus's noise multiplier for (epsilon, delta) over `steps` Poisson-sampled steps at rate
    `sampling_rate` (its PRV accountant; ValueError when out of reach)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PRV accountant's RDP bound on its domain: advice, not an error
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sampling_rate,
                                          steps=steps, accountant=ACCOUNTANT, epsilon_tolerance=0.01))


def accountant_epsilon(noise: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Epsilon at `delta` that Opacus's accountant gives `steps` steps at this rate and noise."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(mechanism=ACCOUNTANT)
    accountant.history = [(noise, sampling_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


def per_example_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Each example's mean cross-entropy over its labelled (completion) tokens: shape (batch,)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none",
    ).view(targets.shape)
    counts = (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return token_loss.sum(dim=1) / counts


def train_supervised_dp(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[Any, str]],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    clip_norm: float,
    noise: float,
    seed: int,
    schedule: str = "cosine",
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """DP-SGD in place for `steps` steps (module docstring); returns the mean loss of each step's
    sampled batch. `batch_size` is the expected batch (q = batch_size / len(pairs)); `noise` the
    noise multiplier; `seed` seeds the generator of both the sampling and the noise (the client's
    secret-derived seed, `privacy.secret.ClientSecret.torch_seed`)."""
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    data = encode_pairs(tokenizer, pairs)
    n = len(data)
    if steps == 0 or n == 0:
        return []
    rate = min(1.0, batch_size / n)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about hooks on modules whose inputs need no grad
        wrapped = GradSampleModule(model, loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.AdamW(params, lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.01),
        noise_multiplier=noise, max_grad_norm=clip_norm, expected_batch_size=batch_size,
        loss_reduction="mean", generator=generator, secure_mode=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.original_optimizer, lambda s: lr_factor(s, steps, schedule))
    wrapped.train()
    losses = []
    try:
        for step in range(steps):
            chosen = torch.nonzero(torch.rand(n, generator=generator) < rate).flatten().tolist()
            if chosen:
                batch = {k: v.to(model.device) for k, v in _collate([data[i] for i in chosen],
                                                                    tokenizer.pad_token_id).items()}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    loss = per_example_loss(wrapped, batch).mean()
                    loss.backward()
                optimizer.step()
                losses.append(float(loss.item()))
            else:
                # An empty Poisson draw (about e^-q*n: never at the defaults) still releases a noisy
                # step, as the accountant counts it.
                for p in params:
                    p.grad = torch.normal(0.0, noise * clip_norm, p.shape, generator=generator) / batch_size
                optimizer.original_optimizer.step()
                losses.append(math.nan)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if on_step:
                on_step(step + 1, losses[-1])
    finally:
        wrapped.remove_hooks()
        for p in model.parameters():
            for name in ("grad_sample", "summed_grad", "_current_grad_sample"):
                if hasattr(p, name):
                    delattr(p, name)
    model.eval()
    return losses
