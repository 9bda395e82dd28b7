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
    text = "Solve for x: x + 12 = 20\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    # Fuse decoder: no spaces inserted between characters.
    assert tokenizer.decode(ids) == text


def test_the_answer_tags_are_single_tokens_that_decode_back(tokenizer):
    text = "x = 2\n<answer>8</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len("x = 2\n") + 1 + len("8") + 1
    assert tokenizer.convert_ids_to_tokens(ids[-3:]) == ["<answer>", "8", "</answer>"]
    # Not special: generation decodes with skip_special_tokens=True and must keep them.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # A tag split by other text is just characters.
    assert len(tokenizer("<answ er>", add_special_tokens=False)["input_ids"]) == len("<answ er>")


def test_tokenizer_fingerprint_covers_the_vocabulary(tokenizer, monkeypatch):
    from fedgrpo.models import tiny

    assert tiny.tokenizer_fingerprint(tokenizer) == tiny.tokenizer_fingerprint()
    monkeypatch.setattr(tiny, "TAG_TOKENS", ("<answer>",))
    assert tiny.tokenizer_fingerprint() != tiny.tokenizer_fingerprint(tokenizer)
    monkeypatch.undo()
    monkeypatch.setattr(tiny, "ALPHABET", tiny.ALPHABET[:-1])
    assert tiny.tokenizer_fingerprint() != tiny.tokenizer_fingerprint(tokenizer)


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
    # Tied embeddings over a 106-token vocabulary (tiny-recipe.md models A and B plus the vocabulary).
    assert sizes == {"small": 670_080, "micro": 89_024}


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


# --- pre-training to the edge of competence (issue 10) -------------------------------------------


class _RecordingLM:
    """A stand-in causal LM: one parameter, a constant loss, and a record of each batch's prompts'
    first token (which tells the domain apart in the test below)."""

    device = "cpu"

    def __init__(self):
        import torch

        self.weight = torch.nn.Parameter(torch.ones(1))
        self.batches: list[list[int]] = []

    def parameters(self):
        return [self.weight]

    def train(self):
        pass

    def eval(self):
        pass

    def __call__(self, input_ids, labels, attention_mask):
        from types import SimpleNamespace

        self.batches.append(input_ids[:, 1].tolist())  # the token after <bos>
        return SimpleNamespace(loss=(self.weight ** 2).sum())


def test_edge_rule_stops_each_domain_at_the_target_and_ends_when_all_reached(tokenizer):
    from fedgrpo.models.pretrain import EdgeRule, train_to_edge

    pairs = {d: [(f"{d} {i}\n<answer>", "1</answer>") for i in range(20)] for d in "ab"}
    token = {d: tokenizer.convert_tokens_to_ids(d) for d in "ab"}
    # Scripted probe: a reaches the target at the 2nd check (step 10), b at the 4th (step 30).
    script = iter([{"a": 0.0, "b": 0.0}, {"a": 0.1, "b": 0.0}, {"a": 0.5, "b": 0.1},
                   {"a": 0.4, "b": 0.2}, {"a": 0.45, "b": 0.6}])
    model = _RecordingLM()
    log = train_to_edge(model, tokenizer, pairs, lambda m: next(script),
                        EdgeRule(target=0.35, max_steps=1000, check_every=10, replay=0.0),
                        batch_size=16, learning_rate=1e-3, seed=0)
    assert log["reached"] == {"a": 20, "b": 40}
    assert log["steps"] == 40 and len(model.batches) == 40
    counts = [sum(t == token["a"] for t in batch) for batch in model.batches]
    assert all(0 < c < 16 for c in counts[:20])  # both domains while both learn
    assert counts[20:] == [0] * 20  # a has reached the target: with replay 0 it gets nothing
    # A domain below the target after reaching it stays stopped (no oscillation): a dipped to 0.4.
    assert log["checks"][3]["weights"] == {"a": 0.0, "b": 1.0}


def test_edge_rule_with_confirmation_ignores_a_lucky_check(tokenizer):
    from fedgrpo.models.pretrain import EdgeRule, train_to_edge

    pairs = {d: [(f"{d} {i}\n<answer>", "1</answer>") for i in range(20)] for d in "ab"}
    # a spikes over the target once (step 10), falls back, then holds it at steps 30 and 40.
    script = iter([{"a": 0.0, "b": 0.9}, {"a": 0.4, "b": 0.9}, {"a": 0.2, "b": 0.9}, {"a": 0.36, "b": 0.9},
                   {"a": 0.4, "b": 0.9}])
    log = train_to_edge(_RecordingLM(), tokenizer, pairs, lambda m: next(script),
                        EdgeRule(target=0.35, max_steps=1000, check_every=10, replay=0.0, confirm=2),
                        batch_size=16, learning_rate=1e-3, seed=0)
    assert log["reached"] == {"a": 40, "b": 10}  # b at its second check; a only once it held
    assert log["steps"] == 40


def test_edge_rule_with_a_resume_margin_trains_a_fallen_domain_again(tokenizer):
    from fedgrpo.models.pretrain import EdgeRule, train_to_edge

    pairs = {d: [(f"{d} {i}\n<answer>", "1</answer>") for i in range(20)] for d in "ab"}
    # a reaches at step 10, falls to 0.2 at step 20 (below 0.35 - 0.1): trained again; b reaches at 20;
    # a is back at step 30, and only then does training end.
    script = iter([{"a": 0.0, "b": 0.0}, {"a": 0.4, "b": 0.1}, {"a": 0.2, "b": 0.5}, {"a": 0.36, "b": 0.5}])
    log = train_to_edge(_RecordingLM(), tokenizer, pairs, lambda m: next(script),
                        EdgeRule(target=0.35, max_steps=1000, check_every=10, replay=0.1, resume_margin=0.1),
                        batch_size=16, learning_rate=1e-3, seed=0)
    assert [c["weights"] for c in log["checks"]] == [
        {"a": 1.0, "b": 1.0}, {"a": 0.1, "b": 1.0}, {"a": 1.0, "b": 0.1}, {"a": 0.1, "b": 0.1}]
    assert log["steps"] == 30 and log["reached"] == {"a": 10, "b": 20}


def test_edge_rule_replays_a_finished_domain_at_its_weight(tokenizer):
    from fedgrpo.models.pretrain import EdgeRule, train_to_edge

    pairs = {d: [(f"{d} {i}\n<answer>", "1</answer>") for i in range(20)] for d in "ab"}
    token_a = tokenizer.convert_tokens_to_ids("a")
    accuracy = {"a": 0.9, "b": 0.0}
    model = _RecordingLM()
    log = train_to_edge(model, tokenizer, pairs, lambda m: accuracy,
                        EdgeRule(target=0.35, max_steps=200, check_every=50, replay=0.1),
                        batch_size=64, learning_rate=1e-3, seed=0)
    assert log["reached"] == {"a": 0, "b": None} and log["steps"] == 200  # b never reaches: budget
    share = sum(t == token_a for batch in model.batches for t in batch) / (200 * 64)
    assert share == pytest.approx(0.1 / 1.1, abs=0.02)


def test_edge_rule_with_no_budget_trains_nothing(tokenizer):
    from fedgrpo.models.pretrain import EdgeRule, train_to_edge

    model = _RecordingLM()
    log = train_to_edge(model, tokenizer, {"a": [("a\n<answer>", "1</answer>")]}, lambda m: {"a": 0.0},
                        EdgeRule(target=0.35, max_steps=0), batch_size=4, learning_rate=1e-3, seed=0)
    assert log["steps"] == 0 and model.batches == []


def test_base_recipe_keys_on_tokenizer_rule_and_architecture(monkeypatch):
    from fedgrpo import load_config
    from fedgrpo.models import tiny
    from fedgrpo.models.cache import cache_key
    from fedgrpo.models.load import base_recipe

    models = load_config().models
    recipe = base_recipe("micro", [], models)
    assert recipe["tokenizer"] == tiny.tokenizer_fingerprint()
    assert recipe["architecture"] == vars(tiny.PRESETS["micro"])
    other_rule = load_config(overrides={"pretrain_target": "0.5"}).models
    assert cache_key(base_recipe("micro", [], other_rule)) != cache_key(recipe)
    monkeypatch.setattr(tiny, "TAG_TOKENS", ())
    assert cache_key(base_recipe("micro", [], models)) != cache_key(recipe)
