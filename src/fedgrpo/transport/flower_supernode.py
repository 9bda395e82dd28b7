"""`fedgrpo supernode ARGS...`: Flower's own `flower-supernode`, with its per-message costs cut.

A Deployment round pays, per SuperNode, for polling and for a fresh ClientApp process per message;
the work itself is a fraction of it. This launcher runs the unchanged `flower-supernode` entry point
in this process (same flags, same protocol, same SuperLink) after three changes:

- **Poll sleeps.** flwr 1.42's SuperNode loop (`flwr.supernode.start_client_internal`) sleeps a
  hard-coded 3 s after a poll of the SuperLink finds no message, and 0.5 s per check of its own
  state while a ClientApp works; none of it is configurable. That one module gets a `time` whose
  `sleep` caps the first at `FEDGRPO_SUPERNODE_POLL_S` seconds (default 0.2: each poll is a request
  the SuperLink must answer) and the second at `LOCAL_WAIT_S` (an in-memory check). Every other
  module, `time.sleep` itself included, is untouched.
- **SuperExec polling.** Flower's own knob `FLWR_SUPEREXEC_TASK_POLL_INTERVAL` (default 1 s: how
  often the SuperNode's SuperExec asks it whether a ClientApp should start) is set to the same
  interval unless set already.
- **A warm ClientApp.** One long-lived worker process runs every message's ClientApp, and the
  `flwr-clientapp` the SuperExec starts per message only hands the task over
  (`flower_clientapp_worker.py`). `FEDGRPO_WARM_CLIENTAPP=0` goes back to a process per message,
  started without the SuperNode's imports (`clientapp_main`).

A plain `flower-supernode` works with the same SuperLink, only slower per round. Costs: one request to
the SuperLink per interval per SuperNode while idle, with TLS and SuperNode authentication about
3 ms of SuperLink CPU each. At 0.05 s, 4 SuperNodes on 2 shared cores took over half a core and
slowed the server's own training steps by up to 70%; 0.2 s keeps that cost negligible
(benchmarks/engines.py).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from fedgrpo.errors import ConfigError

POLL_ENV = "FEDGRPO_SUPERNODE_POLL_S"
DEFAULT_POLL_S = 0.2
CLIENTAPP_COMMAND = "flwr-clientapp"  # what the SuperExec starts per message, found on PATH
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # flwr.supercore.superexec.run_superexec
SUPEREXEC_MIN_POLL_S = 0.01  # Flower refuses less


LOCAL_WAIT_S = 0.02  # cap on the loop's waits for its own state (a reply, an object): no SuperLink request
_REMOTE_SLEEP_S = 1.0  # the loop's only sleep this long or longer is the 3 s after an empty SuperLink poll


class CappedTime:
    """Stands in for the `time` module inside one Flower module; everything but `sleep` is the real
    `time`'s. The SuperNode loop sleeps for two reasons, told apart by their hard-coded lengths:
    3 s after a poll of the SuperLink found nothing (capped at `cap_s`: each poll costs the
    SuperLink a request), and 0.5 s between checks of the node's own in-memory state while a
    ClientApp works (capped at `local_cap_s`: such a check costs nothing outside this process)."""

    def __init__(self, cap_s: float, local_cap_s: float = LOCAL_WAIT_S) -> None:
        self.cap_s, self.local_cap_s = cap_s, min(local_cap_s, cap_s)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap_s if seconds >= _REMOTE_SLEEP_S else self.local_cap_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


OBJECT_PULL_BACKOFF_S = 0.02  # first retry of a message object that has not arrived yet (Flower: 1 s)
OBJECT_PULL_BACKOFF_CAP_S = 0.5  # longest wait between retries (Flower: 10 s)


def retry_object_pulls_sooner(module: ModuleType, name: str) -> None:
    """Make `module.name`, Flower's object puller (`pull_objects` or
    `pull_and_inflate_object_from_tree`, as that module imported it), retry a missing object after
    `OBJECT_PULL_BACKOFF_S` instead of 1 s, doubling up to `OBJECT_PULL_BACKOFF_CAP_S`.

    flwr 1.42 announces a message before its objects (its content) are all there, at every hop:
    the SuperNode stores a message before pulling its objects from the SuperLink, so a ClientApp
    started at once (a warm worker) asks for objects the SuperNode is still fetching; a reply is
    listed before its sender has pushed its objects. The puller then waits 1 s (with jitter) before
    asking again, for an object that arrives milliseconds later: with a warm ClientApp, most rounds
    paid it. A retry costs one request; the number of tries and the total wait keep Flower's limits.
    Patching is idempotent and changes nothing outside `module`."""
    current = getattr(module, name)
    original = current.func if isinstance(current, functools.partial) else current
    setattr(module, name, functools.partial(original, initial_backoff=OBJECT_PULL_BACKOFF_S,
                                            backoff_cap=OBJECT_PULL_BACKOFF_CAP_S))


def poll_interval(environ: Mapping[str, str] = os.environ) -> float:
    """The cap from `FEDGRPO_SUPERNODE_POLL_S` (seconds, 0 < s <= 3), else the default."""
    raw = environ.get(POLL_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_POLL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= 3:
        raise ConfigError(f"{POLL_ENV} must be a number of seconds in (0, 3], got {raw!r}")
    return value


def patch_supernode(cap_s: float) -> ModuleType:
    """Cap the sleeps of `flwr.supernode.start_client_internal` (only there) at `cap_s`; returns it."""
    from flwr.supernode import start_client_internal

    current = getattr(start_client_internal, "time", None)
    if current is not time and not isinstance(current, CappedTime):
        raise ConfigError("this flwr's SuperNode loop does not use `time` as expected; use flower-supernode")
    start_client_internal.time = CappedTime(cap_s)  # type: ignore[attr-defined]
    return start_client_internal


def clientapp_main() -> None:
    """Flower's own `flwr-clientapp` entry point (`flwr/supernode/cli/flwr_clientapp.py`, loaded
    from its file) without importing its package `flwr.supernode.cli`, whose `__init__` also
    imports the whole SuperNode (FastAPI, SQLAlchemy, alembic): 0.7 s instead of 1.3 s per start."""
    import importlib.util

    spec = importlib.util.find_spec("flwr.supernode")
    assert spec is not None and spec.submodule_search_locations
    path = os.path.join(next(iter(spec.submodule_search_locations)), "cli", "flwr_clientapp.py")
    module_spec = importlib.util.spec_from_file_location("fedgrpo_flwr_clientapp", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.argv[0] = CLIENTAPP_COMMAND
    module.flwr_clientapp()


def write_clientapp_launcher(directory: str) -> str:
    """A `flwr-clientapp` script in `directory` that runs `clientapp_main` with this interpreter."""
    path = os.path.join(directory, CLIENTAPP_COMMAND)
    with open(path, "w") as fh:
        fh.write(f"#!{sys.executable}\nfrom fedgrpo.transport.flower_supernode import clientapp_main\n"
                 "clientapp_main()\n")
    os.chmod(path, 0o755)
    return path


def main(argv: Sequence[str]) -> int:
    """Run `flower-supernode argv...` with the patched loop (returns only if Flower does)."""
    import atexit
    import shutil
    import subprocess
    import tempfile

    from fedgrpo.transport.flower_clientapp_worker import warm_enabled, write_dispatcher

    cap = poll_interval()
    warm_enabled()  # a bad FEDGRPO_WARM_CLIENTAPP fails here, before anything starts
    loop = patch_supernode(cap)
    retry_object_pulls_sooner(loop, "pull_objects")  # a message's objects, from the SuperLink
    # The SuperExec is a child process: it reads this from the environment it inherits. It asks
    # only this SuperNode, but each ask is an HTTP request both processes serve: measured idle, 4
    # SuperNodes' SuperExecs and SuperNodes took 0.35 of a core at 0.05 s against 0.11 at 0.2 s.
    os.environ.setdefault(SUPEREXEC_POLL_ENV, f"{max(cap, SUPEREXEC_MIN_POLL_S):g}")
    bin_dir = tempfile.mkdtemp(prefix="fedgrpo-supernode-bin-")  # mode 0700: the socket carries tokens
    atexit.register(shutil.rmtree, bin_dir, ignore_errors=True)
    if warm_enabled():
        socket_path = os.path.join(bin_dir, "clientapp.sock")
        worker = subprocess.Popen([sys.executable, "-m", "fedgrpo.transport.flower_clientapp_worker",
                                   "--socket", socket_path, "--parent-pid", str(os.getpid())])
        atexit.register(worker.kill)
        write_dispatcher(bin_dir, socket_path)
    else:
        write_clientapp_launcher(bin_dir)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
    return 0
