"""Every Flower patch (engines/flower_patches.py): what it changes, that it changes only that, and a
guard per patch that fails when the installed flwr moved its target.

When a guard test here fails after a Flower upgrade, the patch is being skipped at run time with a
FlowerPatchWarning (slower, never broken): re-read the named Flower code, adapt the patch, and update
the recorded hash where there is one.

Run: pytest tests/unit/test_flower_patches.py
"""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
import textwrap
import time
import types
import warnings

import pytest

from fedgrpo.engines import flower_patches as patches
from fedgrpo.engines.flower_patches import CappedTime, FlowerPatchWarning


@pytest.fixture
def no_patch_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowerPatchWarning)
        yield


# --- guards: every target is where the patch expects it on the installed flwr ---------------------

def test_the_supernode_loop_still_sleeps_through_its_own_time(no_patch_warnings):
    from flwr.supernode import start_client_internal

    original = start_client_internal.time
    try:
        assert patches.cap_supernode_sleeps(0.2) is start_client_internal
    finally:
        start_client_internal.time = original


@pytest.mark.parametrize("module_name, name", [
    ("flwr.supernode.start_client_internal", "pull_objects"),  # a message's objects, from the SuperLink
    ("flwr.supernode.runtime.run_clientapp", "pull_and_inflate_object_from_tree"),  # the ClientApp's
    ("flwr.superlink.grid.http_grid", "pull_objects"),  # the ServerApp's replies
])
def test_every_object_puller_still_takes_a_backoff(no_patch_warnings, module_name, name):
    import importlib

    module = importlib.import_module(module_name)
    original = getattr(module, name)
    try:
        assert patches.retry_object_pulls_sooner(module, name) is True
    finally:
        setattr(module, name, original)


def test_flowers_clientapp_entry_still_loads_from_its_file(no_patch_warnings):
    entry = patches.flwr_clientapp_entry()
    assert entry.__module__ == "fedgrpo_flwr_clientapp"  # the light load, not the package import


def test_the_warm_clientapp_still_finds_every_flower_function_it_calls(no_patch_warnings):
    assert patches.warm_clientapp_supported() is True


# `WarmClientApp.run_task` is flwr 1.42's `run_clientapp` step for step (engines/clientapp_worker.py).
RUN_CLIENTAPP_SHA256 = "6ce09559f3a2f5dc"


def test_the_warm_clientapp_mirrors_the_installed_run_clientapp():
    from flwr.supernode.runtime import run_clientapp

    source = inspect.getsource(run_clientapp.run_clientapp)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == RUN_CLIENTAPP_SHA256, (
        "flwr's run_clientapp changed: compare it with WarmClientApp.run_task in "
        "engines/clientapp_worker.py, adapt that, then record the new hash here")


# --- a moved target is skipped with a warning, never a crash ------------------------------------

def test_a_puller_without_backoff_arguments_is_left_alone_with_a_warning():
    module = types.ModuleType("newer_flower")
    module.pull_objects = lambda object_ids, pull_object_fn: {}  # a moved signature: no backoff arguments
    before = module.pull_objects
    with pytest.warns(FlowerPatchWarning, match="about 1 s on most Deployment rounds"):
        assert patches.retry_object_pulls_sooner(module, "pull_objects") is False
    assert module.pull_objects is before
    with pytest.warns(FlowerPatchWarning):
        assert patches.retry_object_pulls_sooner(module, "gone") is False


def test_a_supernode_loop_that_sleeps_otherwise_is_left_alone_with_a_warning(monkeypatch):
    from flwr.supernode import start_client_internal

    moved = types.SimpleNamespace(sleep=time.sleep)
    monkeypatch.setattr(start_client_internal, "time", moved)
    with pytest.warns(FlowerPatchWarning, match="up to 3 s per poll"):
        assert patches.cap_supernode_sleeps(0.2) is None
    assert start_client_internal.time is moved


def test_a_missing_flower_function_turns_the_warm_clientapp_off_with_a_warning(monkeypatch):
    monkeypatch.setitem(patches.WARM_CLIENTAPP_NEEDS, "flwr.supercore.retry", ("a_function_flower_removed",))
    with pytest.warns(FlowerPatchWarning, match="one ClientApp process per message"):
        assert patches.warm_clientapp_supported() is False


# --- what each patch does, and only that -----------------------------------------------------------

def test_capped_time_caps_sleep_and_passes_the_rest_through(monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    capped = CappedTime(0.2, local_cap_s=0.02)
    capped.sleep(3)  # after an empty SuperLink poll: the poll interval
    capped.sleep(0.5)  # waiting for the node's own state: the finer local cap
    capped.sleep(0.01)  # already shorter than both: unchanged
    assert slept == [0.2, 0.02, 0.01]
    slept.clear()
    CappedTime(0.01, local_cap_s=0.02).sleep(0.5)  # the local cap never exceeds the poll cap
    assert slept == [0.01]
    assert capped.monotonic is time.monotonic and capped.time is time.time


def test_the_sleep_cap_changes_only_the_supernode_loops_time():
    from flwr.supernode import start_client_internal

    original = start_client_internal.time
    try:
        module = patches.cap_supernode_sleeps(0.05)
        assert module is start_client_internal
        assert isinstance(start_client_internal.time, CappedTime)
        assert start_client_internal.time.cap_s == 0.05
        assert time.sleep.__module__ == "time"  # the real module is untouched
        import flwr.supercore.superexec.run_superexec as superexec

        assert superexec.time is time
        patches.cap_supernode_sleeps(0.1)  # patching twice is fine
        assert start_client_internal.time.cap_s == 0.1
    finally:
        start_client_internal.time = original


def test_the_patched_loop_sleeps_at_most_the_cap():
    # A fresh interpreter: the SuperNode's own "wait 3 s after an empty poll" returns in ~cap.
    code = textwrap.dedent("""
        import time
        from fedgrpo.engines.flower_patches import cap_supernode_sleeps
        module = cap_supernode_sleeps(0.02)
        t = time.perf_counter(); module.time.sleep(3); capped = time.perf_counter() - t
        t = time.perf_counter(); time.sleep(0.2); real = time.perf_counter() - t
        print(capped, real)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    capped, real = map(float, out.stdout.split())
    assert capped < 0.5
    assert real >= 0.2


def test_object_pulls_retry_sooner_and_keep_flowers_limits():
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    module = types.ModuleType("fake_flower_module")
    module.pull_objects = pull_objects
    patches.retry_object_pulls_sooner(module, "pull_objects")
    patches.retry_object_pulls_sooner(module, "pull_objects")  # idempotent: wraps Flower's function once
    assert module.pull_objects.func is pull_objects
    assert module.pull_objects.keywords == {"initial_backoff": patches.OBJECT_PULL_BACKOFF_S,
                                            "backoff_cap": patches.OBJECT_PULL_BACKOFF_CAP_S}
    misses = {"a": 2}

    def pull(object_id):  # the object arrives on the third ask, as when a SuperNode is still fetching it
        if misses[object_id]:
            misses[object_id] -= 1
            raise ObjectUnavailableError(object_id)
        return b"content"

    started = time.perf_counter()
    assert module.pull_objects(object_ids=["a"], pull_object_fn=pull) == {"a": b"content"}
    # Flower's own backoff would wait about 1 s + 2 s before the third ask.
    assert time.perf_counter() - started < 1.0
