"""Batched generation for evaluation and expert answering (plain ``model.generate`` with KV cache).

A prompt is text (the prefill style) or chat messages (the chat style), which the tokenizer's chat
template renders with the generation prompt, as TRL renders conversational prompts for the policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

Prompt = str | list[dict[str, str]]  # text (prefill style) or chat messages (chat style)


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Return `num_samples` completions per prompt (greedy when `temperature` is None).

    Output: one list per prompt, in prompt order. `on_batch(n)` is called with the number of prompts
    finished after each batch (progress bars).

    The caller's random state is left alone: greedy decoding draws nothing, and sampling runs from
    `seed` inside a forked RNG. (Reseeding the global RNG here made an in-process expert reset the
    policy's sampler at every step, so the embedded engine sampled differently from a Flower one.)
    """
    import torch

    if temperature is None:
        return _generate(model, tokenizer, prompts, max_new_tokens, num_samples, None, batch_size, on_batch)
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _generate(model, tokenizer, prompts, max_new_tokens, num_samples, temperature, batch_size,
                         on_batch)


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> Any:
    """Left-padded input ids and attention mask of a batch of prompts (all text or all messages)."""
    if prompts and not isinstance(prompts[0], str):
        return tokenizer.apply_chat_template(list(prompts), add_generation_prompt=True, tokenize=True,
                                             return_dict=True, padding=True, return_tensors="pt")
    return tokenizer(list(prompts), return_tensors="pt", padding=True)


# fork_rng saves and restores the process-wide generator: two threads sampling at once would
# restore each other's state, so sampled generation takes turns.
_SAMPLING_LOCK = threading.Lock()


def _generate(model: Any, tokenizer: Any, prompts: Sequence[Prompt], max_new_tokens: int, num_samples: int,
              temperature: float | None, batch_size: int,
              on_batch: Callable[[int], None] | None) -> list[list[str]]:
    import torch

    model.eval()
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    do_sample = temperature is not None
    per_batch = max(1, batch_size // max(1, num_samples)) if do_sample else batch_size
    out: list[list[str]] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), per_batch):
            chunk = list(prompts[start : start + per_batch])
            enc = encode_prompts(tokenizer, chunk)
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "do_sample": do_sample,
                "num_return_sequences": num_samples if do_sample else 1,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
            }
            if do_sample:
                kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(temperature=None, top_k=None, top_p=None)
            ids = model.generate(**enc.to(model.device), **kwargs)
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            k = num_samples if do_sample else 1
            out += [texts[i * k : (i + 1) * k] for i in range(len(chunk))]
            if on_batch:
                on_batch(len(chunk))
    return out
