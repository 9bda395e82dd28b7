"""DP-SGD of an expert (Opacus on the tiny Llama): per-sample gradients, clipping, noise scale, the
reported epsilon, and the cache and guarantee file of a DP expert."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from fedgrpo.config import ModelConfig
from fedgrpo.data.prompts import PREFILL
from fedgrpo.data.tasks import Question
from fedgrpo.models.dp_sgd import (
    accountant_epsilon,
    noise_multiplier,
    per_example_loss,
    train_supervised_dp,
)
from fedgrpo.models.load import GUARANTEE_FILE, dp_guarantee, expert_model_dir, read_guarantee
from fedgrpo.models.pretrain import _collate, encode_pairs
from fedgrpo.models.tiny import build_model, build_tokenizer
from fedgrpo.privacy.accounting import dpsgd_epsilon
from fedgrpo.privacy.plan import ExpertDP

PAIRS = [("12+7=", "19"), ("3+4=", "7"), ("55+5=", "60"), ("9+9=", "18"), ("1+2=", "3"), ("40+2=", "42")]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _batch(tokenizer, pairs):
    return _collate(encode_pairs(tokenizer, pairs), tokenizer.pad_token_id)


def _grad_sample_model(model):
    from opacus import GradSampleModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GradSampleModule(model, loss_reduction="mean")


def test_per_sample_gradients_are_each_records_own_gradient(tokenizer):
    """Opacus's per-sample gradients on our model (tied embeddings, padded rows) equal gradients
    computed one record at a time: the slow reference."""
    model = build_model("micro", tokenizer, 0)
    batch = _batch(tokenizer, PAIRS[:4])  # rows of different lengths: right padding
    reference = []
    for i in range(4):
        model.zero_grad()
        per_example_loss(model, {k: v[i:i + 1] for k, v in batch.items()}).sum().backward()
        reference.append({n: p.grad.clone() for n, p in model.named_parameters()})
    wrapped = _grad_sample_model(model)
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_example_loss(wrapped, batch).mean().backward()
    for name, p in model.named_parameters():
        for i in range(4):
            torch.testing.assert_close(p.grad_sample[i], reference[i][name], atol=1e-5, rtol=1e-4)
    wrapped.remove_hooks()


def _update(tokenizer, pairs, *, noise, clip, seed, expected_batch=4):
    """One DP-SGD step with plain SGD at lr 1 from a fixed model: the parameter change."""
    from opacus.optimizers import DPOptimizer

    model = build_model("micro", tokenizer, 0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    wrapped = _grad_sample_model(model)
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=noise, max_grad_norm=clip,
                            expected_batch_size=expected_batch, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_example_loss(wrapped, _batch(tokenizer, pairs)).mean().backward()
    optimizer.step()
    wrapped.remove_hooks()
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def test_clipping_bounds_one_outlier_records_effect_on_an_update(tokenizer):
    outlier = ("7+7=", "~~~~~~~~~~~~~~~~~~~~ zzzz")  # a long, absurd completion: a large gradient
    clip = 0.1
    with_it = _update(tokenizer, PAIRS[:3] + [outlier], noise=0.0, clip=clip, seed=0)
    without = _update(tokenizer, PAIRS[:3], noise=0.0, clip=clip, seed=0)
    # Adding one record moves the summed clipped gradient by at most C: the update by C / batch.
    assert (with_it - without).norm().item() <= clip / 4 * (1 + 1e-4)
    # The bound does something: unclipped, the outlier alone moves it far more.
    unclipped = _update(tokenizer, [outlier], noise=0.0, clip=1e6, seed=0)
    assert unclipped.norm().item() > 5 * clip / 4


def test_the_noise_has_the_stated_scale(tokenizer):
    sigma, clip, batch = 1.5, 0.5, 4
    a = _update(tokenizer, PAIRS[:4], noise=sigma, clip=clip, seed=1)
    b = _update(tokenizer, PAIRS[:4], noise=sigma, clip=clip, seed=2)
    # Same records, two noise draws: their difference is N(0, 2 (sigma C / B)^2) per coordinate.
    assert ((a - b).std() / math.sqrt(2)).item() == pytest.approx(sigma * clip / batch, rel=0.02)


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_the_reported_epsilon_is_the_accountants_for_what_is_run(epsilon):
    dp = ExpertDP(epsilon, 1e-5, 1.0, 64, 3e-3, 600)
    g = dp_guarantee(dp, 1000)
    assert g["sampling_rate"] == pytest.approx(0.064) and g["steps"] == 600
    assert g["noise_multiplier"] == noise_multiplier(epsilon, 1e-5, 0.064, 600)
    assert g["epsilon"] == pytest.approx(accountant_epsilon(g["noise_multiplier"], 0.064, 600, 1e-5), abs=1e-4)
    assert g["epsilon"] <= epsilon
    # An independent accountant (dp-accounting's PLD) agrees on the same steps, rate and noise.
    assert dpsgd_epsilon(g["noise_multiplier"], 0.064, 600, 1e-5) == pytest.approx(g["epsilon"], rel=0.03)


def test_dp_training_runs_poisson_batches_and_is_seeded(tokenizer):
    model_a, model_b = build_model("micro", tokenizer, 0), build_model("micro", tokenizer, 0)
    kwargs = dict(steps=3, batch_size=3, learning_rate=1e-3, clip_norm=1.0, noise=1.0)
    losses = train_supervised_dp(model_a, tokenizer, PAIRS, seed=5, **kwargs)
    train_supervised_dp(model_b, tokenizer, PAIRS, seed=5, **kwargs)
    assert len(losses) == 3
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert not any(hasattr(p, "grad_sample") for p in model_a.parameters())  # Opacus leaves nothing behind


def test_a_dp_expert_is_cached_under_its_dp_settings_and_records_its_guarantee(tmp_path, tokenizer):
    base = tmp_path / "base"
    build_model("micro", tokenizer, 0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    config = ModelConfig(expert_steps=2, sft_batch_size=2, cache_dir=str(tmp_path / "cache"))
    shard = [Question(f"q{i}", "arithmetic", "basic_arithmetic", q, a) for i, (q, a) in enumerate(PAIRS)]
    plain, _ = expert_model_dir(base, "client-0", shard, 1, config, PREFILL)
    dp = ExpertDP(8.0, 1e-2, 1.0, 2, 1e-3, 2)
    private, hit = expert_model_dir(base, "client-0", shard, 1, config, PREFILL, dp=dp)
    stricter, _ = expert_model_dir(base, "client-0", shard, 1, config, PREFILL, dp=ExpertDP(4.0, 1e-2, 1.0, 2, 1e-3, 2))
    assert len({plain, private, stricter}) == 3 and not hit
    assert read_guarantee(plain) is None
    g = read_guarantee(private)
    assert g["epsilon"] <= 8.0 and g["records"] == len(PAIRS) and g["steps"] == 2
    assert "seed" not in json.dumps(g) and "secret" not in json.dumps(g)  # nothing that replays the noise
    assert (private / GUARANTEE_FILE).is_file()
    assert expert_model_dir(base, "client-0", shard, 1, config, PREFILL, dp=dp) == (private, True)
