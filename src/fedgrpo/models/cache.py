"""Content-addressed model cache.

A trained model is stored under ``<cache>/<kind>-<key>/`` where the key hashes its whole recipe: the
architecture, every training knob, a digest of the exact training items, the seed, the parent model's
key and the versions of the libraries that shape the weights. Changing any of these gives a new entry;
nothing is ever overwritten in place. Writes go to a temporary sibling directory that is renamed into
place only when complete, so an interrupted run never leaves a half-written model that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1
COMPLETE_MARKER = "fedgrpo-recipe.json"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "tokenizers", "reasoning-gym"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def items_digest(lines: Iterable[str]) -> str:
    """Digest of training data, order included (order changes the weights)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def cache_key(recipe: dict[str, Any]) -> str:
    """Stable 16-hex-digit key of a JSON-serialisable recipe (key order does not matter)."""
    payload = json.dumps({"format": CACHE_FORMAT, **recipe}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def cached_dir(cache_root: Path, kind: str, recipe: dict[str, Any]) -> Path:
    return cache_root / f"{kind}-{cache_key(recipe)}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def get_or_build(
    cache_root: Path, kind: str, recipe: dict[str, Any], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """Return (directory, was_cached). On a miss, `build(tmp_dir)` writes the model, then it is
    published atomically with the recipe beside it."""
    target = cached_dir(cache_root, kind, recipe)
    if is_complete(target):
        return target, True
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_root))
    try:
        build(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(recipe, indent=2, sort_keys=True))
        if target.exists():  # an incomplete leftover from an interrupted run
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, False
