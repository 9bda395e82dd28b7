"""Tiny Llama-style causal LMs with a character tokenizer, built from scratch (nothing downloaded).

The tokenizer has one token per printable ASCII character plus newline, tab and the multiplication and
division signs some generators print; anything else maps to <unk>. The two answer tags of the prompt
template, ``<answer>`` and ``</answer>``, are single (non-special) tokens: every completion ends with
the closing tag, so spelling it out cost 9 generation steps per candidate (measured 22-25% of a GRPO
step) and 9 targets per pre-training item that teach nothing. It is a standard
``PreTrainedTokenizerFast`` (WordLevel model, one-character pre-tokenizer, ``Fuse`` decoder so decoded
text has no spaces between characters, a template that prepends <bos>, left padding), saved with the
model, so a cached tiny model is an ordinary local Hugging Face directory that TRL can load.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from fedgrpo.data.prompts import CLOSE_TAG, OPEN_TAG

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
TAG_TOKENS = (OPEN_TAG, CLOSE_TAG)  # the prompt template's answer tags, one token each
ALPHABET = tuple(dict.fromkeys(string.printable.replace("\x0b", "").replace("\x0c", "").replace("\r", "") + "×÷−"))
MAX_POSITIONS = 256


@dataclass(frozen=True)
class TinyArch:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int


PRESETS: dict[str, TinyArch] = {
    "small": TinyArch(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=256),
    "micro": TinyArch(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128),
}


def build_tokenizer() -> Any:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((PAD, BOS, EOS, UNK, *TAG_TOKENS, *ALPHABET))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    core.decoder = decoders.Fuse()
    # Added tokens are matched before pre-tokenization; non-special, so decoding keeps them.
    core.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in TAG_TOKENS])
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )


def build_model(preset: str, tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def tokenizer_fingerprint(tokenizer: Any | None = None) -> str:
    """A digest of everything that defines the tokenizer: vocabulary, added tokens, pre-tokenizer,
    template and decoder (its full serialisation). The model cache keys on it, so a vocabulary change
    never reuses weights trained with another."""
    import hashlib

    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]
