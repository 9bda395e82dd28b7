"""`prepare` end to end on micro models: models are built, cached, reused and evaluated.

Run: .venv/bin/python -m pytest tests/integration/test_prepare.py
"""

from __future__ import annotations

import json
import time

import pytest

from fedgrpo.config import load_config
from fedgrpo.models.load import load_model
from fedgrpo.training.prepare import prepare, report_prepared

pytestmark = pytest.mark.slow


def test_prepare_builds_server_and_one_expert_per_client(prepared, tiny_config, tmp_path):
    assert list(prepared.expert_dirs) == ["client-0", "client-1"]
    # A fresh cache of its own (the session's may have been filled by any test before this one):
    # nothing could have been a hit.
    fresh = prepare(load_config(overrides={**tiny_config.to_flat(), "cache_dir": str(tmp_path / "cache")}))
    assert not any(fresh.cache_hits.values()) and list(fresh.cache_hits) == ["server", "client-0", "client-1"]
    model, tokenizer = load_model(prepared.server_dir)
    assert model.config.hidden_size == 64  # the micro preset
    assert tokenizer.padding_side == "left"


def test_second_prepare_reuses_every_model(prepared, tiny_config):
    started = time.perf_counter()
    again = prepare(tiny_config)
    elapsed = time.perf_counter() - started
    assert all(again.cache_hits.values()), again.cache_hits
    assert again.server_dir == prepared.server_dir and again.expert_dirs == prepared.expert_dirs
    # Only split generation and hashing remain; training even these micro models takes longer.
    assert elapsed < 10


def test_changing_the_expert_recipe_rebuilds_experts_only(prepared, tiny_config):
    from dataclasses import replace

    changed = replace(tiny_config, models=replace(tiny_config.models, expert_steps=9))
    again = prepare(changed)
    assert again.cache_hits["server"] is True
    assert not again.cache_hits["client-0"] and not again.cache_hits["client-1"]
    assert again.expert_dirs["client-0"] != prepared.expert_dirs["client-0"]


def test_experts_differ_from_the_server(prepared):
    import torch

    server, _ = load_model(prepared.server_dir)
    expert, _ = load_model(prepared.expert_dirs["client-0"])
    # Fine-tuning moved the weights: the expert is not a copy of its base.
    diffs = [
        not torch.equal(a, b) for a, b in zip(server.state_dict().values(), expert.state_dict().values())
    ]
    assert any(diffs)


def test_report_covers_every_model_and_domain(prepared):
    report = report_prepared(prepared)
    domains = ["arithmetic", "spelling"]
    assert list(report.server) == domains
    for score in report.server.values():
        assert score.n == 12 and 0.0 <= score.pass_at_1 <= 1.0
        assert score.sampled_mean is not None and 0.0 <= score.sampled_mean <= 1.0
    assert set(report.experts) == {"client-0", "client-1"}
    assert report.expert_domains == {"client-0": "arithmetic", "client-1": "spelling"}
    assert 0.0 <= report.signal_share <= 1.0 and report.signal_probe == 40
    json.dumps(report.to_dict())  # the report is what `prepare.json` holds: it must serialise
