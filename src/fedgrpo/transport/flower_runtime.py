"""Launch Flower: the Simulation runtime in this process, or a run on a Deployment SuperLink.

- `simulate`: Flower's Simulation runtime (`flwr.simulation.run_simulation`): the ServerApp runs in a
  thread of this process, each client is a virtual SuperNode served by Ray actors, one CPU each (on
  a 2-core machine Flower's default of 2 CPUs per ClientApp would run one client at a time).
- `submit_run`: writes a throw-away Flower App directory (pyproject with the components and this
  run's config) and a Flower config naming the SuperLink, then `flwr run <app> fedgrpo --stream`,
  which returns when the run ends. The ServerApp runs next to the SuperLink and writes the results.

Both set `FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1` for their children: otherwise every run
builds a fresh environment with `uv sync` from the network.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedgrpo.errors import FedGRPOError

NO_INSTALL = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
CONNECTION = "fedgrpo"


def quiet_flower() -> None:
    """Flower logs every round at INFO; keep warnings and errors only."""
    logging.getLogger("flwr").setLevel(logging.WARNING)


def simulate(server_app: ServerApp, client_app: ClientApp, num_supernodes: int,
             cpus_per_client: float = 1.0) -> None:
    from flwr.simulation import run_simulation

    os.environ.update(NO_INSTALL)
    quiet_flower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # run_simulation is deprecated in favour of `flwr run`
        run_simulation(
            server_app=server_app, client_app=client_app, num_supernodes=num_supernodes,
            backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                            "init_args": {"logging_level": "ERROR", "log_to_driver": False}},
        )


def flwr_executable(name: str = "flwr") -> str:
    """The Flower command next to this interpreter (a venv's bin), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FedGRPOError(f"`{name}` not found; install flwr in this environment (pip install fedgrpo)")
    return found


def write_app_dir(app_dir: Path, run_config: Mapping[str, bool | int | float | str]) -> Path:
    """A minimal Flower App: the components (installed fedgrpo) and this run's config as defaults."""
    app_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]", 'requires = ["setuptools>=68"]', 'build-backend = "setuptools.build_meta"', "",
        "[project]", 'name = "fedgrpo-run"', 'version = "0.1.0"', 'description = "A FedGRPO run"',
        'license = "Apache-2.0"', "dependencies = []", "",
        "[tool.flwr.app]", 'publisher = "fedgrpo"', "",
        "[tool.flwr.app.components]", 'serverapp = "fedgrpo.apps:server_app"',
        'clientapp = "fedgrpo.apps:client_app"', "",
        "[tool.flwr.app.config]",
    ]
    lines += [f"{key} = {toml_value(value)}" for key, value in run_config.items()]
    (app_dir / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return app_dir


def toml_value(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


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


def submit_run(run_config: Mapping[str, bool | int | float | str], address: str,
               root_certificates: str | None, app_dir: Path, timeout_s: float | None = None) -> None:
    """`flwr run` this run on the SuperLink at `address` and stream its log until it ends."""
    write_app_dir(app_dir, run_config)
    with tempfile.TemporaryDirectory(prefix="fedgrpo-flwr-home-") as home:
        write_flower_home(Path(home), address, root_certificates)
        env = {**os.environ, **NO_INSTALL, "FLWR_HOME": home}
        try:
            proc = subprocess.run([flwr_executable(), "run", str(app_dir), CONNECTION, "--stream"],
                                  env=env, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise FedGRPOError(f"the Flower run did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise FedGRPOError(f"`flwr run` failed (exit {proc.returncode}); is the SuperLink at {address} "
                           "running and are the SuperNodes connected?")
