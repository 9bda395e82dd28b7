"""A warm ClientApp for `fedgrpo supernode`: one long-lived process runs every message's ClientApp.

flwr 1.42's SuperNode starts a fresh `flwr-clientapp` process for every message it receives
(`SubprocessExecutor.launch`). That start (Python, Flower's runtime, the app) costs 0.7-1.3 s, and
four at once on 2 cores about 3 s: most of a Deployment round once the polling sleeps are cut
(`supernode.py`). Flower keeps prestarted workers only for its Kubernetes executors
(`flwr.supercore.task_worker`), and those serve one task each. So `fedgrpo supernode` starts one
worker process per SuperNode, and puts a dispatcher first on the SuperExec's PATH as
`flwr-clientapp`:

- `dispatch` (the `flwr-clientapp` the SuperExec starts per message) is standard library only and
  runs under ``python -S`` (about 20 ms): it hands its arguments (the Runtime API address and the
  task's token) to the worker over a Unix socket and exits with the task's exit code. When no worker
  answers (not started yet, or gone) it runs Flower's one-shot ClientApp itself, as before.
- `serve` is the worker: it listens on that socket (mode 0600 in a private 0700 directory, since a
  task token is a credential) and runs each task with `run_task` in a thread of its own, so a task
  stuck on its expert does not hold up the next. (Flower's process-global `TaskIdentity`, which
  concurrent tasks overwrite, is read only when a ClientApp creates a new instruction message;
  FedGRPO's only replies.)
- `run_task` is Flower's own `run_clientapp` (`flwr/supernode/runtime/run_clientapp.py`) step for
  step, with the same Runtime API client, heartbeat, `pull_task_input`, `push_message` and
  `push_task_output`, minus the process exit and signal handlers; and the FAB is installed and
  its ClientApp loaded once per FAB hash instead of per message. Everything a loaded ClientApp
  caches (FedGRPO's parsed run config, an expert model loaded in-process) stays loaded.

`FEDGRPO_WARM_CLIENTAPP=0` turns the worker off (one process per message, Flower's way).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

CLIENTAPP_COMMAND = "flwr-clientapp"  # what the SuperExec starts per message, found on PATH
WARM_ENV = "FEDGRPO_WARM_CLIENTAPP"
_ARGS_WITH_VALUE = {"--runtime-api-address", "--token", "--root-certificates", "--parent-pid"}
_FLAGS = {"--insecure"}


def warm_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `fedgrpo supernode` starts the warm worker (`FEDGRPO_WARM_CLIENTAPP`, default on)."""
    from fedgrpo.errors import ConfigError

    raw = environ.get(WARM_ENV, "1").strip().lower()
    if raw in ("1", "true", "yes", "on", ""):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{WARM_ENV} must be 1 or 0, got {raw!r}")


def parse_invocation(argv: Sequence[str]) -> dict[str, Any] | None:
    """The task in `flwr-clientapp` arguments as the SuperExec passes them, or None for anything
    the worker does not handle (a token on stdin or in a file, runtime dependency installation):
    those run the one-shot way."""
    values: dict[str, Any] = {"insecure": False}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in _FLAGS:
            values[arg[2:].replace("-", "_")] = True
        elif arg in _ARGS_WITH_VALUE and args:
            values[arg[2:].replace("-", "_")] = args.pop(0)
        else:
            return None
    if not values.get("token") or not values.get("runtime_api_address"):
        return None
    return {
        "token": values["token"],
        "runtime_api_address": values["runtime_api_address"],
        "insecure": values["insecure"],
        "root_certificates_path": values.get("root_certificates"),
    }


# --- the dispatcher: standard library only, it runs under `python -S` ---------------------------

def dispatch(argv: Sequence[str], socket_path: str | None,
             fallback: Callable[[Sequence[str]], int]) -> int:
    """Hand one task to the worker at `socket_path` and return its exit code; run `fallback(argv)`
    instead when the invocation is not one the worker handles or no worker accepts it."""
    invocation = parse_invocation(argv)
    if invocation is None or not socket_path:
        return fallback(argv)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(socket_path)
    except OSError:
        return fallback(argv)  # no worker (yet): the task must still run
    with conn, conn.makefile("rwb") as channel:
        channel.write(json.dumps(invocation).encode() + b"\n")
        channel.flush()
        line = channel.readline()  # blocks until the task is done
    try:
        return int(json.loads(line)["returncode"])
    except (ValueError, KeyError, TypeError):
        return 1  # the worker died mid-task: the SuperNode sees no reply and reports it


# --- the worker ---------------------------------------------------------------------------------

class WarmClientApp:
    """Runs ClientApp tasks in this process (see the module docstring)."""

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}  # FAB hash -> loaded ClientApp
        # Tasks run in threads: two first messages of a run must not install the same FAB at once.
        self._apps_lock = threading.Lock()

    def _client_app(self, run: Any, fab: Any) -> Any:
        with self._apps_lock:
            app = self._apps.get(fab.hash_str)
            if app is None:
                from flwr.cli.install import install_from_fab
                from flwr.clientapp.utils import get_load_client_app_fn

                install_from_fab(fab.content, skip_prompt=True)
                load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
                app = self._apps[fab.hash_str] = load(run.fab_id, run.fab_version, fab.hash_str)
            return app

    def run_task(self, runtime_api_address: str, token: str, insecure: bool,
                 certificates: bytes | None) -> int:
        """One message, as `flwr.supernode.runtime.run_clientapp.run_clientapp` runs it."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.exit import ExitCode
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient
        from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
        from flwr.supernode.runtime.run_clientapp import (
            pull_task_input,
            push_message,
            push_task_output,
        )

        retry_invoker = make_simple_http_retry_invoker()
        client = RuntimeHttpClient.from_server_address(
            server_address=runtime_api_address, insecure=insecure, root_certificates=certificates,
            interceptors=[RuntimeTracingInterceptor(),
                          RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                          RuntimeTokenHttpInterceptor(token)],
            retry_invoker=retry_invoker,
        )
        heartbeat = None
        message = reply = context = None
        sub_status, details, exit_code = SubStatus.FAILED, "ClientApp task failed", ExitCode.SUCCESS
        try:
            heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
            heartbeat.start()
            message, context, run, fab = pull_task_input(client)
            reply = self._client_app(run, fab)(message=message, context=context)
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as ex:  # noqa: BLE001 - reported to the SuperNode, as Flower does
            code = (ErrorCode.LOAD_CLIENT_APP_EXCEPTION if isinstance(ex, LoadClientAppError)
                    else ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
            details = f"{type(ex)}:<'{ex}'>"
            print(f"fedgrpo warm ClientApp: {details}", file=sys.stderr, flush=True)
            if message is not None:
                reply = Message(Error(code=code, reason=details), reply_to=message)
            exit_code = ExitCode.TASK_PROC_EXCEPTION
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception as ex:  # noqa: BLE001
                print(f"fedgrpo warm ClientApp: failed to push the reply: {ex}", file=sys.stderr, flush=True)
                exit_code = ExitCode.CLIENTAPP_COMMUNICATION_ERROR
            retry_invoker.max_tries = 1  # as Flower's exit handler: do not hang on the way out
            push_task_output(client=client, context=context, sub_status=sub_status, details=details)
            if heartbeat is not None and heartbeat.is_running:
                heartbeat.stop()
            client.close()
        return int(exit_code)


def serve(socket_path: str, parent_pid: int | None = None) -> None:
    """Serve tasks on `socket_path` until the parent process (the SuperNode) is gone."""
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    worker = WarmClientApp()
    # Pay the imports before the first message, not during it.
    from flwr.supernode.runtime import run_clientapp

    from fedgrpo.engines.flower_patches import retry_object_pulls_sooner

    # The SuperExec starts a task as soon as its message is stored, before the SuperNode has its
    # objects; Flower's first retry would wait 1 s for them.
    retry_object_pulls_sooner(run_clientapp, "pull_and_inflate_object_from_tree")

    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path + ".tmp")
    os.chmod(socket_path + ".tmp", 0o600)
    os.rename(socket_path + ".tmp", socket_path)  # a dispatcher never sees a half-made socket
    server.listen(16)
    counter = itertools.count(1)
    while True:
        conn, _ = server.accept()
        # A thread per task: a task stuck on its expert must not hold up the next round's message.
        threading.Thread(target=_serve_one, args=(worker, conn, counter), name="fedgrpo-clientapp-task",
                         daemon=True).start()


def _serve_one(worker: WarmClientApp, conn: socket.socket, counter: Iterator[int]) -> None:
    with conn, conn.makefile("rwb") as channel:
        started, returncode = time.perf_counter(), 1
        try:
            invocation = json.loads(channel.readline())
            certificates_path = invocation.get("root_certificates_path")
            certificates = Path(certificates_path).read_bytes() if certificates_path else None
            returncode = worker.run_task(invocation["runtime_api_address"], invocation["token"],
                                         bool(invocation["insecure"]), certificates)
        except Exception as ex:  # noqa: BLE001 - one bad task must not take the worker down
            print(f"fedgrpo warm ClientApp: task failed: {ex!r}", file=sys.stderr, flush=True)
        print(f"fedgrpo warm ClientApp: message {next(counter)} done in {time.perf_counter() - started:.3f} s "
              f"(exit code {returncode})", file=sys.stderr, flush=True)
        try:
            channel.write(json.dumps({"returncode": returncode}).encode() + b"\n")
            channel.flush()
        except OSError:
            pass  # the dispatcher left; the SuperNode has the reply already


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Leave when the SuperNode that started this worker is gone (even by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="fedgrpo-parent-watch", daemon=True).start()


def write_dispatcher(directory: str, socket_path: str) -> str:
    """The `flwr-clientapp` script the SuperExec finds first on PATH: `dispatch` under `python -S`,
    falling back to `clientapp_main` (Flower's one-shot ClientApp)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(directory, CLIENTAPP_COMMAND)
    with open(path, "w") as fh:
        fh.write(
            f"#!{sys.executable} -S\n"
            "import os, sys\n"
            # Only this file's directory, after the standard library: importing the fedgrpo
            # package would pull in its dependencies, which is the start-up cost avoided here.
            f"sys.path.append({here!r})\n"
            f"from {os.path.splitext(os.path.basename(__file__))[0]} import dispatch\n"
            "def one_shot(argv):\n"
            f"    os.execv({sys.executable!r}, [{sys.executable!r}, '-c', "
            "'from fedgrpo.engines.clientapp_worker import clientapp_main; clientapp_main()', *argv])\n"
            f"sys.exit(dispatch(sys.argv[1:], {socket_path!r}, one_shot))\n"
        )
    os.chmod(path, 0o755)
    return path


def clientapp_main() -> None:
    """Flower's one-shot ClientApp (`flwr-clientapp`), started without the SuperNode's imports."""
    from fedgrpo.engines.flower_patches import flwr_clientapp_entry

    entry = flwr_clientapp_entry()
    sys.argv[0] = CLIENTAPP_COMMAND
    entry()


def write_one_shot_launcher(directory: str) -> str:
    """A `flwr-clientapp` script in `directory` that runs `clientapp_main` with this interpreter."""
    path = os.path.join(directory, CLIENTAPP_COMMAND)
    with open(path, "w") as fh:
        fh.write(f"#!{sys.executable}\nfrom fedgrpo.engines.clientapp_worker import clientapp_main\n"
                 "clientapp_main()\n")
    os.chmod(path, 0o755)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="fedgrpo's warm ClientApp worker (started by fedgrpo supernode)")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    serve(args.socket, args.parent_pid)


if __name__ == "__main__":
    main()
