"""`fedgrpo supernode ARGS...`: Flower's own `flower-supernode`, polling fast.

flwr 1.42's SuperNode loop (`flwr.supernode.start_client_internal`) sleeps a hard-coded 3 s after
every poll of the SuperLink that finds no message, and 0.5 s per check while it waits for the
ClientApp's reply; none of it is configurable. With one message per round, those sleeps are up to half a
Deployment round's cost. This launcher runs the unchanged `flower-supernode` entry point in this
process after giving that one module a `time` whose `sleep` is capped at `FEDGRPO_SUPERNODE_POLL_S`
seconds (default 0.2); every other module, `time.sleep` itself included, is untouched. It also
sets Flower's own knob `FLWR_SUPEREXEC_TASK_POLL_INTERVAL` (default 1 s, how often the SuperNode's
SuperExec asks for a ClientApp to start) to the same interval, unless it is set already, and puts
a lighter `flwr-clientapp` first on the SuperExec's PATH: Flower's own entry point without the
SuperNode's imports (see `clientapp_main`).

The flags are `flower-supernode`'s; a plain `flower-supernode` works with the same SuperLink, only
slower per round. Costs: one request to the SuperLink per interval per SuperNode while idle, and one
SuperExec poll of the SuperNode; with TLS and SuperNode authentication a SuperLink spends about 3 ms
of CPU on each. At 0.05 s, 4 SuperNodes on 2 shared cores took over half a core and slowed the
server's own training steps by up to 70%; 0.2 s keeps that cost negligible (benchmarks/engines.py).
"""

from __future__ import annotations

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


class CappedTime:
    """Stands in for the `time` module inside one Flower module: `sleep` is capped at `cap_s`,
    everything else is the real `time`'s."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


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
    import tempfile

    cap = poll_interval()
    patch_supernode(cap)
    # The SuperExec is a child process: it reads these from the environment it inherits.
    os.environ.setdefault(SUPEREXEC_POLL_ENV, f"{max(cap, SUPEREXEC_MIN_POLL_S):g}")
    bin_dir = tempfile.mkdtemp(prefix="fedgrpo-supernode-bin-")
    atexit.register(shutil.rmtree, bin_dir, ignore_errors=True)
    write_clientapp_launcher(bin_dir)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *argv]
    flower_supernode()
    return 0
