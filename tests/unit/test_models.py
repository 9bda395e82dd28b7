"""Tiny models: the character tokenizer, the presets, supervised training and batched generation.

These build micro models in memory (no cache), a second or two each.
"""

from __future__ import annotations

import pytest

from fedgrpo.data.prompts import render_completion, render_prompt
from fedgrpo.models.generate import generate_completions
from fedgrpo.models.pretrain import IGNORE_INDEX, encode_pairs, lr_factor, train_supervised
from fedgrpo.models.tiny import ALPHABET, PRESETS, build_model, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_tokenizer_is_one_token_per_character_and_round_trips(tokenizer):
    text = "Solve for x: x + 12 = 20\n<answer>8</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    # Fuse decoder: no spaces inserted between characters.
    assert tokenizer.decode(ids) == text


def test_tokenizer_prepends_bos_and_maps_unknown_characters(tokenizer):
    ids = tokenizer("a")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 2
    assert tokenizer("é", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_tokenizer_pads_on_the_left(tokenizer):
    batch = tokenizer(["a", "abc"], padding=True)
    # Generation continues from the right edge, so padding must sit on the left.
    assert batch["input_ids"][0][:2] == [tokenizer.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0, 1, 1]


def test_alphabet_covers_default_domains():
    from fedgrpo.config import DEFAULT_DOMAINS
    from fedgrpo.data.gym import iter_unique_questions, resolve_domain

    chars = set()
    for name in DEFAULT_DOMAINS:
        stream = iter_unique_questions(resolve_domain(name), 0, 0)
        for _ in range(300):
            q = next(stream)
            chars |= set(render_prompt(q.question) + render_completion(q.answer))
    assert chars <= set(ALPHABET) | {"<", ">", "/"}


def test_presets_have_the_documented_sizes(tokenizer):
    sizes = {name: sum(p.numel() for p in build_model(name, tokenizer, 0).parameters()) for name in PRESETS}
    # Tied embeddings over a 104-token vocabulary (tiny-recipe.md models A and B plus the vocabulary).
    assert sizes == {"small": 669_824, "micro": 88_896}


def test_labels_cover_only_the_completion_and_eos(tokenizer):
    [(ids, labels)] = encode_pairs(tokenizer, [("Q\n<answer>", "7</answer>")])
    prompt_len = len(tokenizer("Q\n<answer>")["input_ids"])
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert ids[-1] == tokenizer.eos_token_id


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert lr_factor(0, 100) == pytest.approx(0.1)
    assert lr_factor(9, 100) == pytest.approx(1.0)
    assert lr_factor(99, 100) == pytest.approx(0.1, abs=0.01)
    assert all(lr_factor(s, 100) >= lr_factor(s + 1, 100) for s in range(10, 99))


def test_constant_schedule_holds_the_peak_after_warm_up():
    assert lr_factor(0, 100, "constant") == pytest.approx(0.1)
    assert all(lr_factor(s, 100, "constant") == 1.0 for s in range(9, 100))


def test_supervised_training_learns_a_fixed_answer(tokenizer):
    model = build_model("micro", tokenizer, seed=0)
    pairs = [(render_prompt("Calculate 2 + 3."), render_completion("5"))]
    losses = train_supervised(model, tokenizer, pairs, steps=60, batch_size=4, learning_rate=3e-3, seed=0)
    assert losses[-1] < losses[0] / 5
    [[greedy]] = generate_completions(model, tokenizer, [pairs[0][0]], max_new_tokens=12)
    assert greedy == "5</answer>"


def test_sampling_returns_the_requested_shape_and_is_seeded(tokenizer):
    model = build_model("micro", tokenizer, seed=0)
    prompts = ["a\n<answer>", "bb\n<answer>", "ccc\n<answer>"]
    first = generate_completions(model, tokenizer, prompts, max_new_tokens=5, num_samples=4,
                                 temperature=1.0, batch_size=8, seed=3)
    again = generate_completions(model, tokenizer, prompts, max_new_tokens=5, num_samples=4,
                                 temperature=1.0, batch_size=8, seed=3)
    assert [len(row) for row in first] == [4, 4, 4]
    assert first == again
