"""Run FedGRPO on a Flower Deployment: `flwr run` against an existing SuperLink.

`submit_run` writes a throw-away Flower App directory (pyproject with the components and this run's
config) and a private Flower config naming the SuperLink, then `flwr run <app> fedgrpo --stream`,
which returns when the run ends. The ServerApp runs next to the SuperLink and writes the results.

`FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1` is set for every Flower child process: otherwise
each run builds a fresh environment with `uv sync` from the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from fedgrpo.config import FedGRPOConfig
from fedgrpo.errors import FedGRPOError

NO_INSTALL = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
CONNECTION = "fedgrpo"


def config_with_output(config: FedGRPOConfig, out: Path) -> FedGRPOConfig:
    """The config with `output_dir` set to `out` (absolute): where the ServerApp, which runs next to
    the SuperLink, writes the results."""
    return replace(config, output=replace(config.output, output_dir=str(out.resolve())))


def flwr_executable(name: str = "flwr") -> str:
    """The Flower command next to this interpreter (a venv's bin), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FedGRPOError(f"`{name}` not found; install flwr in this environment (pip install fedgrpo)")
    return found


def write_app_dir(app_dir: Path, run_config_toml: str) -> Path:
    """A minimal Flower App: the components (installed fedgrpo) and this run's config as defaults."""
    app_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]", 'requires = ["setuptools>=68"]', 'build-backend = "setuptools.build_meta"', "",
        "[project]", 'name = "fedgrpo-run"', 'version = "0.1.0"', 'description = "A FedGRPO run"',
        'license = "Apache-2.0"', "dependencies = []", "",
        "[tool.flwr.app]", 'publisher = "fedgrpo"', "",
        "[tool.flwr.app.components]", 'serverapp = "fedgrpo.apps:server_app"',
        'clientapp = "fedgrpo.apps:client_app"', "",
    ]
    (app_dir / "pyproject.toml").write_text("\n".join(lines) + "\n" + run_config_toml)
    return app_dir


def write_flower_home(home: Path, address: str, root_certificates: str | None) -> Path:
    """A private FLWR_HOME whose config.toml names the SuperLink, so the user's ~/.flwr is untouched."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f'address = "{address}"']
    if root_certificates:
        lines.append(f'root-certificates = "{Path(root_certificates).expanduser().resolve()}"')
    else:
        lines.append("insecure = true")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def submit_run(run_config_toml: str, address: str, root_certificates: str | None, app_dir: Path,
               timeout_s: float | None = None, home: Path | None = None) -> None:
    """Run FedGRPO on the SuperLink at `address` (see `run_app`)."""
    run_app(write_app_dir(app_dir, run_config_toml), address, root_certificates, timeout_s, home)


def run_app(app_dir: Path, address: str, root_certificates: str | None, timeout_s: float | None = None,
            home: Path | None = None) -> None:
    """`flwr run <app_dir>` on the SuperLink at `address`, streaming its log until the run ends.
    `home` is the FLWR_HOME to use (by default a temporary one naming only this SuperLink, so the
    user's ~/.flwr is untouched and no managed local SuperLink is started)."""
    with tempfile.TemporaryDirectory(prefix="fedgrpo-flwr-home-") as tmp:
        flwr_home = home or write_flower_home(Path(tmp), address, root_certificates)
        env = {**os.environ, **NO_INSTALL, "FLWR_HOME": str(flwr_home)}
        try:
            proc = subprocess.run([flwr_executable(), "run", str(app_dir), CONNECTION, "--stream"],
                                  env=env, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise FedGRPOError(f"the Flower run did not finish within {timeout_s:g} s") from None
        finally:
            for pid in managed_superlink_pids(flwr_home):
                stop_pid(pid)
    if proc.returncode != 0:
        raise FedGRPOError(f"`flwr run` failed (exit {proc.returncode}); is the SuperLink at {address} "
                           "running and are the SuperNodes connected?")


def stop_pid(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def managed_superlink_pids(home: Path) -> list[int]:
    """Processes of a managed local SuperLink that `flwr run` started under this FLWR_HOME (it does so
    only for a `:local:` connection, which we never write; checked anyway, since it outlives the run)."""
    marker = str(home / "local-superlink")
    pids = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in cmdline and marker in cmdline:
            pids.append(int(entry.parent.name))
    return pids
