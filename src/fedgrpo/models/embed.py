"""Frozen question encoders phi for the confidence graph.

- ``server``: the paper's choice, derived from the foundation model: a frozen copy of the *initial*
  server model; the masked mean of its last hidden state over the question's tokens (no prompt
  template), l2-normalised.
- ``ngram``: character 3-gram counts hashed into 1024 dimensions, l2-normalised; no model at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedgrpo.config import ENCODER_NAMES

NGRAM_DIM = 1024


def embed_questions(texts: Sequence[str], encoder: str, model_dir: Path | None = None,
                    batch_size: int = 256) -> np.ndarray:
    """(N, d) l2-normalised embeddings of `texts`."""
    if encoder == "ngram":
        return _ngram(texts)
    if encoder == "server":
        if model_dir is None:
            raise ValueError("the server encoder needs the server model directory")
        return _hidden_mean(texts, model_dir, batch_size)
    raise ValueError(f"unknown encoder {encoder!r}: use one of {', '.join(ENCODER_NAMES)}")


def _l2(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _ngram(texts: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(texts), NGRAM_DIM))
    for row, text in enumerate(texts):
        padded = f"  {text}  "
        for i in range(len(padded) - 2):
            # Stable hash (Python's hash() is salted per process).
            h = int.from_bytes(hashlib.blake2b(padded[i:i + 3].encode(), digest_size=4).digest(), "big")
            out[row, h % NGRAM_DIM] += 1.0
    return _l2(out)


def _hidden_mean(texts: Sequence[str], model_dir: Path, batch_size: int) -> np.ndarray:
    import torch

    from fedgrpo.models.load import load_model

    model, tokenizer = load_model(model_dir)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True).to(model.device)
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]  # (B, T, d)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
    return _l2(np.concatenate(rows) if rows else np.zeros((0, 1)))
