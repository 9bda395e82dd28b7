"""Every change FedGRPO makes to Flower 1.42's own code, in one place, each behind a guard.

Flower's Deployment runtime pays per message for polling sleeps, a one-second retry and a fresh
ClientApp process; none of it is configurable in flwr 1.42. These patches cut those costs. Each
checks that its target is still what it was written against; a target that moved is left alone
with a `FlowerPatchWarning` naming what that costs, so a newer Flower runs slower, never crashes.
`tests/unit/test_flower_patches.py` fails on the installed flwr when any target moved, so an
upgrade is noticed in CI rather than in a slow deployment.

| patch | target (flwr 1.42) | cost without it (benchmarks/engines.py, loopback, 2 cores) |
|---|---|---|
| `cap_supernode_sleeps` | `flwr.supernode.start_client_internal`'s `time.sleep(3)` after an empty poll and `time.sleep(0.5)` between local checks | a bare Deployment round trip 6.1 s instead of 2.7 s (before the other patches) |
| `retry_object_pulls_sooner` | `pull_objects` / `pull_and_inflate_object_from_tree` (`initial_backoff`, `backoff_cap`) as the SuperNode loop, the warm ClientApp and the ServerApp's HTTP grid imported them | about 1 s on most rounds: a message is announced before its objects arrive and the first retry waits 1 s |
| `flwr_clientapp_entry` | `flwr/supernode/cli/flwr_clientapp.py`, loaded without its package `__init__` | 1.3 s instead of 0.7 s per one-shot ClientApp start |
| `warm_clientapp_supported` | the Flower functions `engines.clientapp_worker.WarmClientApp.run_task` calls, mirroring `flwr/supernode/runtime/run_clientapp.py` | one ClientApp process per message: a Deployment step 3.55x embedded instead of 1.74x at 4 steps per generation |

The SuperExec's poll interval is not a patch: it is Flower's own `FLWR_SUPEREXEC_TASK_POLL_INTERVAL`.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import time
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any


class FlowerPatchWarning(RuntimeWarning):
    """A Flower patch was skipped because its target changed; the message names the cost."""


def _skip(patch: str, why: str, cost: str) -> bool:
    warnings.warn(f"FedGRPO left Flower unpatched ({patch}): {why}; cost: {cost}. "
                  "tests/unit/test_flower_patches.py names the target to re-check.",
                  FlowerPatchWarning, stacklevel=3)
    return False


# --- the SuperNode loop's sleeps -----------------------------------------------------------------

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


def cap_supernode_sleeps(cap_s: float) -> ModuleType | None:
    """Cap the sleeps of `flwr.supernode.start_client_internal` (only there) at `cap_s`; returns the
    patched module, or None (warned) when it no longer sleeps through a module-level `time`."""
    from flwr.supernode import start_client_internal as loop

    current = getattr(loop, "time", None)
    source = inspect.getsource(loop)
    if not (current is time or isinstance(current, CappedTime)) or "time.sleep(3)" not in source:
        _skip("SuperNode poll sleeps", "flwr.supernode.start_client_internal no longer calls "
              "time.sleep(3) through its module-level `time`", "a Deployment round waits up to 3 s per poll")
        return None
    loop.time = CappedTime(cap_s)  # type: ignore[attr-defined]
    return loop


# --- object pulls ----------------------------------------------------------------------------------

OBJECT_PULL_BACKOFF_S = 0.02  # first retry of a message object that has not arrived yet (Flower: 1 s)
OBJECT_PULL_BACKOFF_CAP_S = 0.5  # longest wait between retries (Flower: 10 s)


def retry_object_pulls_sooner(module: ModuleType, name: str) -> bool:
    """Make `module.name`, Flower's object puller (`pull_objects` or
    `pull_and_inflate_object_from_tree`, as that module imported it), retry a missing object after
    `OBJECT_PULL_BACKOFF_S` instead of 1 s, doubling up to `OBJECT_PULL_BACKOFF_CAP_S`.

    flwr 1.42 announces a message before its objects (its content) are all there, at every hop:
    the SuperNode stores a message before pulling its objects from the SuperLink, so a ClientApp
    started at once (a warm worker) asks for objects the SuperNode is still fetching; a reply is
    listed before its sender has pushed its objects. The puller then waits 1 s (with jitter) before
    asking again, for an object that arrives milliseconds later. A retry costs one request; the
    number of tries and the total wait keep Flower's limits. Idempotent; changes nothing outside
    `module`. Returns whether the patch is in place."""
    current = getattr(module, name, None)
    original = current.func if isinstance(current, functools.partial) else current
    try:
        params = inspect.signature(original).parameters if callable(original) else {}
    except (TypeError, ValueError):
        params = {}
    if "initial_backoff" not in params or "backoff_cap" not in params:
        return _skip(f"{getattr(module, '__name__', module)}.{name}",
                     "it no longer exists or takes no initial_backoff/backoff_cap",
                     "about 1 s on most Deployment rounds")
    setattr(module, name, functools.partial(original, initial_backoff=OBJECT_PULL_BACKOFF_S,
                                            backoff_cap=OBJECT_PULL_BACKOFF_CAP_S))
    return True


def patch_serverapp_grid() -> bool:
    """The ServerApp's side: its HTTP grid lists a reply before the reply's objects have all reached
    the SuperLink; retry in 20 ms, not 1 s."""
    from flwr.superlink.grid import http_grid

    return retry_object_pulls_sooner(http_grid, "pull_objects")


# --- the ClientApp process ------------------------------------------------------------------------

def flwr_clientapp_entry() -> Callable[[], None]:
    """Flower's own `flwr-clientapp` entry point, loaded from its file
    (`flwr/supernode/cli/flwr_clientapp.py`) without importing its package `flwr.supernode.cli`,
    whose `__init__` also imports the whole SuperNode (FastAPI, SQLAlchemy, alembic): 0.7 s instead
    of 1.3 s per start. Falls back to the ordinary import when the file moved."""
    spec = importlib.util.find_spec("flwr.supernode")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = os.path.join(locations[0], "cli", "flwr_clientapp.py") if locations else ""
    if os.path.isfile(path):
        module_spec = importlib.util.spec_from_file_location("fedgrpo_flwr_clientapp", path)
        if module_spec is not None and module_spec.loader is not None:
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            entry = getattr(module, "flwr_clientapp", None)
            if callable(entry):
                return entry
    _skip("light flwr-clientapp start", f"{path or 'flwr/supernode/cli/flwr_clientapp.py'} is gone or "
          "defines no flwr_clientapp", "about 0.6 s more per one-shot ClientApp start")
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    return flwr_clientapp


# What `WarmClientApp.run_task` calls: Flower's `run_clientapp` step for step (module -> names).
WARM_CLIENTAPP_NEEDS: dict[str, tuple[str, ...]] = {
    "flwr.supernode.runtime.run_clientapp": ("pull_task_input", "push_message", "push_task_output",
                                             "pull_and_inflate_object_from_tree"),
    "flwr.supercore.heartbeat": ("HeartbeatSender", "make_task_heartbeat_fn_http"),
    "flwr.supercore.interceptors": ("RuntimeTokenHttpInterceptor", "RuntimeVersionHttpInterceptor"),
    "flwr.supercore.retry": ("make_simple_http_retry_invoker",),
    "flwr.supercore.runtime": ("RuntimeHttpClient",),
    "flwr.supercore.runtime.tracing": ("RuntimeTracingInterceptor",),
    "flwr.cli.install": ("install_from_fab",),
    "flwr.clientapp.utils": ("get_load_client_app_fn",),
}


def warm_clientapp_supported() -> bool:
    """Whether this flwr still has every function the warm ClientApp runs a task with; if not
    (warned), `fedgrpo supernode` starts one ClientApp process per message, Flower's way."""
    import importlib

    for module_name, names in WARM_CLIENTAPP_NEEDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing = f"{module_name} (the module)"
            break
        absent = [n for n in names if not hasattr(module, n)]
        if absent:
            missing = f"{module_name}.{absent[0]}"
            break
    else:
        return True
    return _skip("warm ClientApp", f"{missing} is gone", "one ClientApp process per message, "
                 "a Deployment step about 3.5x embedded instead of 1.7x")
