"""A client's secret: 32 bytes of OS entropy, made by the client, kept in its own state, never sent.

Every privacy draw of the client derives from it: the uniforms of a released value are
HMAC-SHA256(secret, context and the value's key) expanded by a PCG64 generator seeded with that
digest, so

- the same value key always gets the same noise (a value sent again is the same release: no new
  information, nothing new to account, and a resumed run reproduces the uninterrupted one);
- distinct keys get independent noise (no noise is ever reused on a new value);
- without the secret (the server has the config, seeds, expert ids, request sizes and its logs,
  never the secret) the draws are unpredictable: guessing them means guessing 256 bits.

DP-SGD's sampling and noise use a torch generator seeded from it (`torch_seed`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import numpy as np

SECRET_BYTES = 32


class ClientSecret:
    def __init__(self, key: bytes) -> None:
        if len(key) != SECRET_BYTES:
            raise ValueError(f"a client secret is {SECRET_BYTES} bytes, got {len(key)}")
        self._key = key

    @classmethod
    def new(cls) -> ClientSecret:
        """A fresh secret from the operating system's entropy."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def load_or_create(cls, path: Path) -> ClientSecret:
        """The secret kept at `path` (only the owner may read it), made there on first use."""
        if path.is_file():
            return cls(bytes.fromhex(path.read_text().strip()))
        from fedgrpo.durable import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        secret = cls.new()
        write_atomic(path, secret._key.hex())
        os.chmod(path, 0o600)
        return secret

    def __repr__(self) -> str:  # never print the key
        return "ClientSecret(<hidden>)"

    def _digest(self, *context: str | bytes) -> bytes:
        message = b"\x00".join(c.encode("utf-8") if isinstance(c, str) else c for c in context)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def generator(self, *context: str | bytes) -> np.random.Generator:
        """A generator for one purpose (`context`: what is drawn and for which key)."""
        return np.random.Generator(np.random.PCG64(int.from_bytes(self._digest(*context), "big")))

    def uniforms(self, shape: int | tuple[int, ...], *context: str | bytes) -> np.ndarray:
        return self.generator(*context).random(shape)

    def torch_seed(self, *context: str | bytes) -> int:
        """A 63-bit seed for a torch generator (DP-SGD's Poisson sampling and Gaussian noise)."""
        return int.from_bytes(self._digest("torch", *context)[:8], "big") >> 1
