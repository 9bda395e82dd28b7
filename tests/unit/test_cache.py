"""Unit tests for fedgrpo.models.cache, the content-addressed model cache: cache_key stability
and sensitivity, items_digest order dependence, and get_or_build (build once then hit, atomic
publication that leaves nothing behind when a build fails, rebuilding an incomplete leftover)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.models.cache import (
    COMPLETE_MARKER,
    cache_key,
    cached_dir,
    get_or_build,
    is_complete,
    items_digest,
)

RECIPE = {
    "arch": "tiny:small",
    "steps": 700,
    "lr": 0.002,
    "seed": 0,
    "items": "abc123",
    "parent": None,
    "versions": {"torch": "2.4.0", "transformers": "4.56.2"},
    "domains": ["arithmetic", "spelling"],
}


# --- cache_key / items_digest -------------------------------------------------------------------


def test_cache_key_is_sixteen_hex_digits():
    key = cache_key(RECIPE)
    assert len(key) == 16
    int(key, 16)  # hex


def test_cache_key_ignores_dict_key_order_at_every_level():
    reordered = dict(reversed(list(RECIPE.items())))
    reordered["versions"] = dict(reversed(list(RECIPE["versions"].items())))
    assert list(reordered) != list(RECIPE)  # precondition: the order really differs
    assert cache_key(reordered) == cache_key(RECIPE)


def test_cache_key_is_stable_across_processes():
    # The key must not depend on the process (e.g. on Python's salted hash()): another interpreter
    # with another hash seed computes the same key.
    code = (
        "import json, sys; from fedgrpo.models.cache import cache_key; "
        "print(cache_key(json.loads(sys.argv[1])))"
    )
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(RECIPE)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True, text=True, check=True,
        )
        assert out.stdout.strip() == cache_key(RECIPE)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("arch", "tiny:micro"),
        ("steps", 701),
        ("lr", 0.001),
        ("seed", 1),
        ("items", "abc124"),
        ("parent", "0123456789abcdef"),
        ("versions", {"torch": "2.5.0", "transformers": "4.56.2"}),
        ("domains", ["spelling", "arithmetic"]),  # list order is part of the recipe
    ],
)
def test_cache_key_changes_when_any_recipe_value_changes(key, value):
    changed = {**RECIPE, key: value}
    assert cache_key(changed) != cache_key(RECIPE)


def test_cache_key_changes_when_a_field_is_added_or_removed():
    assert cache_key({**RECIPE, "extra": 0}) != cache_key(RECIPE)
    smaller = dict(RECIPE)
    del smaller["parent"]  # None is a value too: dropping it is a different recipe
    assert cache_key(smaller) != cache_key(RECIPE)


def test_items_digest_depends_on_order():
    assert items_digest(["a", "b"]) != items_digest(["b", "a"])


def test_items_digest_is_deterministic_and_accepts_any_iterable():
    assert items_digest(["a", "b"]) == items_digest(iter(["a", "b"]))


def test_items_digest_separates_items():
    # Concatenation must not collide: ["ab", "c"] and ["a", "bc"] are different training data.
    assert items_digest(["ab", "c"]) != items_digest(["a", "bc"])
    assert items_digest(["a"]) != items_digest(["a", ""])


def test_cached_dir_is_kind_and_key_under_the_root(tmp_path):
    assert cached_dir(tmp_path, "server", RECIPE) == tmp_path / f"server-{cache_key(RECIPE)}"


# --- get_or_build -------------------------------------------------------------------------------


class CountingBuilder:
    def __init__(self, payload: str = "weights"):
        self.calls: list[Path] = []
        self.payload = payload

    def __call__(self, out: Path) -> None:
        self.calls.append(out)
        (out / "model.bin").write_text(self.payload)


def test_get_or_build_builds_once_then_hits(tmp_path):
    root = tmp_path / "cache"  # does not exist yet: get_or_build creates it
    build = CountingBuilder()
    path, cached = get_or_build(root, "server", RECIPE, build)
    assert not cached
    assert len(build.calls) == 1
    assert path == cached_dir(root, "server", RECIPE)
    assert (path / "model.bin").read_text() == "weights"
    assert is_complete(path)
    assert json.loads((path / COMPLETE_MARKER).read_text()) == RECIPE

    again, cached = get_or_build(root, "server", RECIPE, build)
    assert cached
    assert again == path
    assert len(build.calls) == 1  # a hit never calls the builder


def test_builder_writes_to_a_temporary_sibling_not_the_target(tmp_path):
    build = CountingBuilder()
    path, _ = get_or_build(tmp_path, "server", RECIPE, build)
    built_in = build.calls[0]
    # Publication is a rename of a sibling directory: the target never exists half-written.
    assert built_in != path
    assert built_in.parent == tmp_path
    assert not built_in.exists()


def test_other_recipes_and_kinds_get_their_own_entries(tmp_path):
    build = CountingBuilder()
    a, _ = get_or_build(tmp_path, "server", RECIPE, build)
    b, cached_b = get_or_build(tmp_path, "server", {**RECIPE, "seed": 1}, build)
    c, cached_c = get_or_build(tmp_path, "expert", RECIPE, build)
    assert len({a, b, c}) == 3
    assert not cached_b and not cached_c
    assert len(build.calls) == 3


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failing_build_leaves_nothing_behind(tmp_path, error):
    def build(out: Path) -> None:
        (out / "half-written.bin").write_text("partial")
        raise error

    with pytest.raises(type(error)):
        get_or_build(tmp_path, "server", RECIPE, build)
    # No target and no temporary directory: an interrupted run never looks finished or leaks.
    assert list(tmp_path.iterdir()) == []


def test_a_failing_build_is_retried_on_the_next_call(tmp_path):
    def failing(out: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        get_or_build(tmp_path, "server", RECIPE, failing)
    build = CountingBuilder()
    path, cached = get_or_build(tmp_path, "server", RECIPE, build)
    assert not cached and len(build.calls) == 1 and is_complete(path)


def test_an_incomplete_leftover_target_is_rebuilt(tmp_path):
    target = cached_dir(tmp_path, "server", RECIPE)
    target.mkdir()
    (target / "stale.bin").write_text("from an interrupted run")
    assert not is_complete(target)

    build = CountingBuilder("fresh")
    path, cached = get_or_build(tmp_path, "server", RECIPE, build)
    assert path == target
    assert not cached
    assert len(build.calls) == 1
    # The leftover is replaced wholesale, not merged into.
    assert sorted(p.name for p in path.iterdir()) == sorted([COMPLETE_MARKER, "model.bin"])
    assert (path / "model.bin").read_text() == "fresh"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_local_model_retrained_in_place_gets_a_new_identity(tmp_path):
    import os

    from fedgrpo.models.load import local_model_identity

    (tmp_path / "model.safetensors").write_bytes(b"a" * 16)
    before = local_model_identity(tmp_path)
    # Same size, new content (a retrained model of the same architecture): experts built on the old
    # weights must not be served from the cache.
    (tmp_path / "model.safetensors").write_bytes(b"b" * 16)
    stat = (tmp_path / "model.safetensors").stat()
    os.utime(tmp_path / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert local_model_identity(tmp_path) != before
