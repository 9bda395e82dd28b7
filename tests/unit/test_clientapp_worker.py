"""The warm ClientApp: the `flwr-clientapp` dispatcher hands each task to one long-lived worker.

The worker's Flower side (pull the task, run the ClientApp, push the reply) is exercised by the
loopback deployment in tests/integration/test_engines.py; here, the hand-over and its fallbacks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fedgrpo.engines.clientapp_worker import (
    dispatch,
    parse_invocation,
    warm_enabled,
    write_dispatcher,
)
from fedgrpo.errors import ConfigError

# What flwr 1.42's SubprocessExecutor.launch passes (flwr/supercore/superexec/executor/subprocess_executor.py).
SUPEREXEC_ARGS = ["--runtime-api-address", "127.0.0.1:9094", "--token", "tok-1", "--root-certificates",
                  "/certs/ca.crt", "--parent-pid", "123"]


def test_parse_invocation_reads_what_the_superexec_passes():
    assert parse_invocation(SUPEREXEC_ARGS) == {
        "token": "tok-1", "runtime_api_address": "127.0.0.1:9094", "insecure": False,
        "root_certificates_path": "/certs/ca.crt"}
    insecure = parse_invocation(["--runtime-api-address", "a:1", "--token", "t", "--insecure"])
    assert insecure is not None and insecure["insecure"] is True and insecure["root_certificates_path"] is None


@pytest.mark.parametrize("argv", [
    [*SUPEREXEC_ARGS, "--allow-runtime-dependency-installation"],  # installs per task: one-shot
    ["--runtime-api-address", "a:1", "--token-stdin"],  # token not on the command line
    ["--runtime-api-address", "a:1"],  # no token
    ["--token", "t"],  # no address
    ["--runtime-api-address", "a:1", "--token"],  # flag without its value
])
def test_parse_invocation_leaves_anything_else_to_flower(argv):
    assert parse_invocation(argv) is None


class FakeWorker:
    """Accepts one task on a Unix socket, records it and answers `returncode` (or hangs up)."""

    def __init__(self, path: str, returncode: int | None) -> None:
        self.received: list[dict] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, args=(returncode,), daemon=True)
        self.thread.start()

    def _serve(self, returncode: int | None) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rwb") as channel:
            self.received.append(json.loads(channel.readline()))
            if returncode is not None:
                channel.write(json.dumps({"returncode": returncode}).encode() + b"\n")
        self.server.close()


@pytest.fixture
def sock_path():
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    import tempfile

    directory = tempfile.mkdtemp(prefix="fg-")
    yield os.path.join(directory, "w.sock")
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def test_dispatch_hands_the_task_to_the_worker_and_returns_its_exit_code(sock_path):
    worker = FakeWorker(sock_path, returncode=7)
    fallback_calls = []
    assert dispatch(SUPEREXEC_ARGS, sock_path, fallback_calls.append) == 7
    worker.thread.join(5)
    assert worker.received == [parse_invocation(SUPEREXEC_ARGS)]
    assert fallback_calls == []


def test_a_worker_gone_mid_task_is_a_failed_task_not_a_second_run(sock_path):
    FakeWorker(sock_path, returncode=None)
    fallback_calls = []
    assert dispatch(SUPEREXEC_ARGS, sock_path, fallback_calls.append) == 1
    assert fallback_calls == []  # the token may be spent already: never run the task twice


def test_without_a_worker_the_task_runs_the_one_shot_way(sock_path):
    ran = []
    assert dispatch(SUPEREXEC_ARGS, sock_path, lambda argv: ran.append(list(argv)) or 0) == 0
    assert ran == [SUPEREXEC_ARGS]
    assert dispatch(SUPEREXEC_ARGS, None, lambda argv: 3) == 3
    assert dispatch(["--token-stdin"], sock_path, lambda argv: 4) == 4


def test_the_dispatcher_script_runs_without_site_packages(sock_path, tmp_path):
    worker = FakeWorker(sock_path, returncode=5)
    script = write_dispatcher(str(tmp_path), sock_path)
    assert Path(script).read_text().startswith(f"#!{sys.executable} -S\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([script, *SUPEREXEC_ARGS], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 5, proc.stderr
    worker.thread.join(5)
    assert worker.received[0]["token"] == "tok-1"


@pytest.mark.parametrize("raw, expected", [(None, True), ("1", True), ("on", True), ("0", False), ("false", False)])
def test_warm_enabled(raw, expected):
    assert warm_enabled({} if raw is None else {"FEDGRPO_WARM_CLIENTAPP": raw}) is expected


def test_warm_enabled_rejects_nonsense():
    with pytest.raises(ConfigError, match="FEDGRPO_WARM_CLIENTAPP must be 1 or 0"):
        warm_enabled({"FEDGRPO_WARM_CLIENTAPP": "maybe"})
