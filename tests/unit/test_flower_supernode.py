"""`fedgrpo supernode`: the SuperNode loop's sleeps are capped, and only there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.transport import flower_supernode as fast_supernode
from fedgrpo.transport.flower_supernode import CappedTime, patch_supernode, poll_interval


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


def test_patch_changes_only_the_supernode_loops_time():
    from flwr.supernode import start_client_internal

    original = start_client_internal.time
    try:
        module = patch_supernode(0.05)
        assert module is start_client_internal
        assert isinstance(start_client_internal.time, CappedTime)
        assert start_client_internal.time.cap_s == 0.05
        assert time.sleep.__module__ == "time"  # the real module is untouched
        import flwr.supercore.superexec.run_superexec as superexec

        assert superexec.time is time
        patch_supernode(0.1)  # patching twice is fine
        assert start_client_internal.time.cap_s == 0.1
    finally:
        start_client_internal.time = original


def test_patched_module_sleeps_at_most_the_cap():
    # A fresh interpreter: the SuperNode's own "wait 3 s after an empty poll" returns in ~cap.
    code = textwrap.dedent("""
        import time
        from fedgrpo.transport.flower_supernode import patch_supernode
        module = patch_supernode(0.02)
        t = time.perf_counter(); module.time.sleep(3); capped = time.perf_counter() - t
        t = time.perf_counter(); time.sleep(0.2); real = time.perf_counter() - t
        print(capped, real)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    capped, real = map(float, out.stdout.split())
    assert capped < 0.5
    assert real >= 0.2


@pytest.mark.parametrize("raw, expected", [(None, fast_supernode.DEFAULT_POLL_S), ("", fast_supernode.DEFAULT_POLL_S),
                                           ("0.2", 0.2), ("3", 3.0)])
def test_poll_interval(raw, expected):
    env = {} if raw is None else {fast_supernode.POLL_ENV: raw}
    assert poll_interval(env) == expected


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "5", "nan", "inf"])
def test_poll_interval_rejects_nonsense(raw):
    with pytest.raises(ConfigError, match="FEDGRPO_SUPERNODE_POLL_S"):
        poll_interval({fast_supernode.POLL_ENV: raw})


def test_bad_interval_is_a_one_line_error_exit_2():
    import os

    env = {**os.environ, fast_supernode.POLL_ENV: "abc"}
    proc = subprocess.run([sys.executable, "-m", "fedgrpo.cli", "supernode", "--insecure"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "FEDGRPO_SUPERNODE_POLL_S" in proc.stderr


def test_clientapp_launcher_script(tmp_path):
    path = fast_supernode.write_clientapp_launcher(str(tmp_path))
    text = Path(path).read_text()
    assert text.startswith(f"#!{sys.executable}\n") and "clientapp_main()" in text
    # Flower's own flwr-clientapp parser answers --help without importing the SuperNode package.
    code = ("import sys; sys.argv=['x','--help']\n"
            "from fedgrpo.transport.flower_supernode import clientapp_main\n"
            "try:\n    clientapp_main()\nexcept SystemExit:\n    pass\n"
            "print('flwr.supernode.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "Run a Flower ClientApp" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_object_pulls_retry_sooner_and_keep_flowers_limits():
    import types

    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    from fedgrpo.transport.flower_supernode import retry_object_pulls_sooner

    module = types.ModuleType("fake_flower_module")
    module.pull_objects = pull_objects
    retry_object_pulls_sooner(module, "pull_objects")
    retry_object_pulls_sooner(module, "pull_objects")  # idempotent: wraps Flower's function once
    assert module.pull_objects.func is pull_objects
    assert module.pull_objects.keywords == {"initial_backoff": fast_supernode.OBJECT_PULL_BACKOFF_S,
                                            "backoff_cap": fast_supernode.OBJECT_PULL_BACKOFF_CAP_S}
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
