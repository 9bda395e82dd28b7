"""`fedgrpo supernode ARGS...`: Flower's own `flower-supernode`, with its per-message costs cut.

A Deployment round pays, per SuperNode, for polling and for a fresh ClientApp process per message;
the work itself is a fraction of it. This launcher runs the unchanged `flower-supernode` entry point
in this process (same flags, same protocol, same SuperLink) after three changes:

- **Poll sleeps.** flwr 1.42's SuperNode loop (`flwr.supernode.start_client_internal`) sleeps a
  hard-coded 3 s after a poll of the SuperLink finds no message, and 0.5 s per check of its own
  state while a ClientApp works; none of it is configurable. That one module gets a `time` whose
  `sleep` caps the first at `FEDGRPO_SUPERNODE_POLL_S` seconds (default 0.2: each poll is a request
  the SuperLink must answer) and the second at 20 ms (an in-memory check). Every other module,
  `time.sleep` itself included, is untouched (`flower_patches.cap_supernode_sleeps`, guarded).
- **SuperExec polling.** Flower's own knob `FLWR_SUPEREXEC_TASK_POLL_INTERVAL` (default 1 s: how
  often the SuperNode's SuperExec asks it whether a ClientApp should start) is set to the same
  interval unless set already.
- **A warm ClientApp.** One long-lived worker process runs every message's ClientApp, and the
  `flwr-clientapp` the SuperExec starts per message only hands the task over
  (`clientapp_worker.py`). `FEDGRPO_WARM_CLIENTAPP=0` goes back to a process per message,
  started without the SuperNode's imports (`clientapp_worker.clientapp_main`).

A plain `flower-supernode` works with the same SuperLink, only slower per round. Costs: one request to
the SuperLink per interval per SuperNode while idle, with TLS and SuperNode authentication about
3 ms of SuperLink CPU each. At 0.05 s, 4 SuperNodes on 2 shared cores took over half a core and
slowed the server's own training steps by up to 70%; 0.2 s keeps that cost negligible
(benchmarks/engines.py).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence

from fedgrpo.errors import ConfigError

POLL_ENV = "FEDGRPO_SUPERNODE_POLL_S"
DEFAULT_POLL_S = 0.2
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # flwr.supercore.superexec.run_superexec
SUPEREXEC_MIN_POLL_S = 0.01  # Flower refuses less


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


def main(argv: Sequence[str]) -> int:
    """Run `flower-supernode argv...` with the patched loop (returns only if Flower does)."""
    import atexit
    import shutil
    import subprocess
    import tempfile

    from fedgrpo.engines.clientapp_worker import (
        warm_enabled,
        write_dispatcher,
        write_one_shot_launcher,
    )
    from fedgrpo.engines.flower_patches import (
        cap_supernode_sleeps,
        retry_object_pulls_sooner,
        warm_clientapp_supported,
    )

    cap = poll_interval()
    warm = warm_enabled()  # a bad FEDGRPO_WARM_CLIENTAPP fails here, before anything starts
    loop = cap_supernode_sleeps(cap)
    if loop is not None:
        retry_object_pulls_sooner(loop, "pull_objects")  # a message's objects, from the SuperLink
    # The SuperExec is a child process: it reads this from the environment it inherits. It asks
    # only this SuperNode, but each ask is an HTTP request both processes serve: measured idle, 4
    # SuperNodes' SuperExecs and SuperNodes took 0.35 of a core at 0.05 s against 0.11 at 0.2 s.
    os.environ.setdefault(SUPEREXEC_POLL_ENV, f"{max(cap, SUPEREXEC_MIN_POLL_S):g}")
    bin_dir = tempfile.mkdtemp(prefix="fedgrpo-supernode-bin-")  # mode 0700: the socket carries tokens
    atexit.register(shutil.rmtree, bin_dir, ignore_errors=True)
    if warm and warm_clientapp_supported():
        socket_path = os.path.join(bin_dir, "clientapp.sock")
        worker = subprocess.Popen([sys.executable, "-m", "fedgrpo.engines.clientapp_worker",
                                   "--socket", socket_path, "--parent-pid", str(os.getpid())])
        atexit.register(worker.kill)
        write_dispatcher(bin_dir, socket_path)
    else:
        write_one_shot_launcher(bin_dir)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
    return 0
