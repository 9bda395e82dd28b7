"""Shared fixtures for tests that train real (micro-sized) models.

One prepared federation is built per test session in a private cache directory and shared, because
each build costs seconds of CPU even at this size.
"""

from __future__ import annotations

import dataclasses

import pytest

from fedgrpo.config import load_config

# Small enough to train in seconds on 2 cores, big enough to exercise every split and every model.
TINY_OVERRIDES = {
    "domains": ("arithmetic", "spelling"),
    "pool_size": 40,
    "aux_size": 8,
    "public_size": 40,
    "eval_size": 12,
    "client_size": 30,
    "server_model": "tiny:micro",
    "expert_model": "tiny:micro",
    "pretrain_steps": 150,  # enough to learn the answer format: rewards then vary
    "pretrain_target": 0.0,  # a fixed step count: no accuracy probes at this size
    "expert_steps": 8,
    "sft_batch_size": 16,
    "eval_samples": 2,
    "max_new_tokens": 12,
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_config(cache_dir):
    return load_config(overrides={**TINY_OVERRIDES, "cache_dir": str(cache_dir)})


@pytest.fixture(scope="session")
def prepared(tiny_config):
    from fedgrpo.training.prepare import prepare

    return prepare(tiny_config)


def grpo_settings(**changes):
    """The default config's GRPO settings at one step per generation and without overlap (each reward
    call then covers one optimizer step), with a test's `changes`."""
    from fedgrpo.training.trainer import GRPOSettings

    base = GRPOSettings.from_config(load_config(overrides={"steps_per_generation": 1, "overlap_rewards": "off"}))
    return dataclasses.replace(base, **changes)
