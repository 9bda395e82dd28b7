"""Guard for `training/overlap.py`, the one place that builds on TRL's private code.

`OverlappedGRPOTrainer` copies the train branch of `GRPOTrainer._prepare_inputs`, overrides
`Trainer.get_batch_samples`, calls `_generate_and_score_completions` and
`_get_per_token_logps_and_entropies`, and rewrites the reward entries of `_metrics` / `_logs` that
`_generate_and_score_completions` writes. It was written against TRL 1.16.0 and transformers 5.24.
When the installed code differs, this test fails: re-read the named function against overlap.py,
adapt it, run tests/integration/test_overlap.py, then record the new digest here. The default path
(overlap_rewards auto: off except on a Flower Deployment) uses TRL's public API only, plus one
behavioural fact pinned at the end: a pass over TRL's `RepeatSampler` is one shuffle of its own
generator (what `training.trainer.resume_sampler_callback` replays on resume).

Run: pytest tests/unit/test_trl_guard.py
"""

from __future__ import annotations

import hashlib
import inspect

import pytest

# The code overlap.py mirrors, as installed when it was written (sha256 of the source, 16 hex digits).
MIRRORED = {
    ("trl", "GRPOTrainer", "_prepare_inputs"): "f824e7fb07147956",
    ("trl", "GRPOTrainer", "_generate_and_score_completions"): "1fa48922792dcd5c",
    ("trl", "GRPOTrainer", "_get_per_token_logps_and_entropies"): "ea73c3909275851d",
    ("transformers", "Trainer", "get_batch_samples"): "0b3727386f73f670",
    ("transformers", "Trainer", "_get_num_items_in_batch"): "a31fa106f70db1b9",
}


@pytest.mark.parametrize(("package", "cls", "method"), list(MIRRORED))
def test_the_code_overlap_mirrors_is_what_it_was_written_against(package, cls, method):
    import importlib

    owner = getattr(importlib.import_module(package), cls)
    digest = hashlib.sha256(inspect.getsource(getattr(owner, method)).encode()).hexdigest()[:16]
    assert digest == MIRRORED[(package, cls, method)], (
        f"{package}'s {cls}.{method} changed: compare it with training/overlap.py (OverlappedGRPOTrainer), "
        "adapt that, run tests/integration/test_overlap.py, then record the new digest in MIRRORED")


def test_the_trl_helpers_overlap_imports_still_exist():
    from trl.models import utils as model_utils
    from trl.trainer import utils

    for name in ("nanstd", "shuffle_sequence_dict", "split_pixel_values_by_grid", "split_tensor_dict",
                 "unsplit_pixel_values_by_grid"):
        assert callable(getattr(utils, name, None)), name
    assert callable(getattr(model_utils, "disable_gradient_checkpointing", None))


def test_one_pass_over_trls_repeat_sampler_is_one_shuffle_of_its_own_generator():
    """`training.trainer.resume_sampler_callback` replays finished epochs by iterating TRL's sampler
    once per epoch: that must advance its generator exactly as one epoch of training does, and the
    generator must be found behind a DataLoader."""
    import torch
    from torch.utils.data import DataLoader
    from trl.trainer.utils import RepeatSampler

    from fedgrpo.training.trainer import find_sampler_generator

    sampler = RepeatSampler(list(range(10)), mini_repeat_count=2, batch_size=3, repeat_count=4, seed=5)
    reference = torch.Generator()
    reference.manual_seed(5)
    for _ in range(3):
        order = list(sampler)
        assert order[:2] == [order[0]] * 2  # each index repeated mini_repeat_count times in a row
        torch.randperm(10, generator=reference)
        assert torch.equal(sampler.generator.get_state(), reference.get_state())
    loader = DataLoader(list(range(10)), batch_size=6, sampler=sampler)
    assert find_sampler_generator(loader) is sampler
