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
from collections.abc import Callable
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedgrpo.errors import FedGRPOError

NO_INSTALL = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
CONNECTION = "fedgrpo"


def quiet_flower() -> None:
    """Flower logs every round at INFO and warns that `run_simulation` is deprecated; FedGRPO
    reports what matters (failures, lost experts) itself, so keep Flower's errors only."""
    logging.getLogger("flwr").setLevel(logging.ERROR)


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
                _stop_pid(pid)
    if proc.returncode != 0:
        raise FedGRPOError(f"`flwr run` failed (exit {proc.returncode}); is the SuperLink at {address} "
                           "running and are the SuperNodes connected?")


# --- a whole deployment on this machine's loopback (`fedgrpo up`, the CI test) ------------------------

def write_tls_files(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A self-signed CA and a server certificate for `host` (and localhost), valid for 2 days."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2))

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                    issuer_key: ec.EllipticCurvePrivateKey, is_ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(validity[0]).not_valid_after(validity[1])
                   .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
        if not is_ca:
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = certificate("fedgrpo local CA", ca_key, "fedgrpo local CA", ca_key, True)
    server = certificate(host, server_key, "fedgrpo local CA", ca_key, False)
    files = {"ca": directory / "ca.crt", "cert": directory / "server.pem", "key": directory / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files["key"].chmod(0o600)
    return files


def write_node_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication key pair (EC P-384, OpenSSH format): (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalDeployment:
    """A SuperLink and N SuperNodes on 127.0.0.1, TLS on, SuperNode authentication on; `stop()`
    ends every process it started (each in its own process group, so Flower's children go too).
    The SuperNodes are `fedgrpo supernode` (fast polling) unless `fast_supernodes=False`, which
    starts plain `flower-supernode`."""

    def __init__(self, workdir: Path, node_configs: list[str], *, tls: bool = True, auth: bool = True,
                 host: str = "127.0.0.1", port: int | None = None, log: Callable[[str], None] = print,
                 fast_supernodes: bool = True) -> None:
        self.workdir, self.node_configs, self.tls, self.auth = workdir, node_configs, tls, auth
        self.fast_supernodes = fast_supernodes
        self.host, self.port = host, port or free_port(host)
        self.address = f"{host}:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.names: dict[str, subprocess.Popen[bytes]] = {}
        self.home = workdir / "flwr-home"
        self.tls_files: dict[str, Path] = {}
        self.log = log
        self.env = {**os.environ, **NO_INSTALL, "FLWR_HOME": str(self.home)}
        # SuperNodes start `flwr-clientapp` from PATH: make this environment's bin come first.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        # Flower's FLWR_SUPEREXEC_TASK_POLL_INTERVAL (how often a SuperExec asks for an app process
        # to start) stays at its default 1 s for the SuperLink's SuperExec: it starts the ServerApp
        # once per run, so a shorter interval would save under a second per run and cost the
        # SuperLink a request per interval all run long. `fedgrpo supernode` sets its own.

    @property
    def root_certificates(self) -> str | None:
        return str(self.tls_files["ca"]) if self.tls else None

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process that `stop()` will end (its output goes to logs/<name>.log)."""
        return self._spawn(name, argv, extra_env)

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("wb") as fh:
            proc = subprocess.Popen(argv, env={**self.env, **(extra_env or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(proc)
        self.names[name] = proc
        return proc

    def start(self, ready_timeout_s: float = 60.0) -> LocalDeployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_flower_home(self.home, self.address, None)
        link = [flwr_executable("flower-superlink"), "--host", self.host, "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.tls:
            self.tls_files = write_tls_files(self.workdir / "certs", self.host)
            link += ["--ssl-certfile", str(self.tls_files["cert"]), "--ssl-keyfile", str(self.tls_files["key"]),
                     "--ssl-ca-certfile", str(self.tls_files["ca"])]
        else:
            link += ["--insecure"]
        if self.auth:
            link += ["--enable-supernode-auth"]
        write_flower_home(self.home, self.address, self.root_certificates)
        self._spawn("superlink", link)
        self._wait_for_port(ready_timeout_s)
        for index, node_config in enumerate(self.node_configs):
            # `fedgrpo supernode`: flower-supernode with its poll sleeps cut (see flower_supernode.py).
            launcher = ([sys.executable, "-m", "fedgrpo.cli", "supernode"] if self.fast_supernodes
                        else [flwr_executable("flower-supernode")])
            node = [*launcher, "--superlink", self.address,
                    "--host", self.host, "--port", str(free_port(self.host)), "--node-config", node_config]
            node += ["--root-certificates", str(self.tls_files["ca"])] if self.tls else ["--insecure"]
            if self.auth:
                private, public = write_node_keys(self.workdir / "keys", f"supernode-{index}")
                self._flwr(["supernode", "register", str(public), CONNECTION])
                node += ["--auth-supernode-private-key", str(private)]
            self._spawn(f"supernode-{index}", node)
        return self

    def _flwr(self, args: list[str]) -> None:
        proc = subprocess.run([flwr_executable(), *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise FedGRPOError(f"`flwr {' '.join(args[:2])}` failed: {(proc.stdout + proc.stderr).strip()[-400:]}")

    def _wait_for_port(self, timeout_s: float) -> None:
        import socket
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.names["superlink"].poll() is not None:
                raise FedGRPOError(f"the SuperLink exited early; see {self.workdir / 'logs' / 'superlink.log'}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.2)
        raise FedGRPOError(f"the SuperLink did not open {self.address} within {timeout_s:g} s")

    def stop_process(self, name: str) -> None:
        """Stop one process by its name (e.g. "supernode-2": a lost site), with its children."""
        _stop_group(self.names[name])

    def stop(self) -> None:
        for proc in reversed(self.processes):
            _stop_group(proc)
        for pid in managed_superlink_pids(self.home):
            _stop_pid(pid)

    def __enter__(self) -> LocalDeployment:
        return self  # start() first (or use start_local_federation); leaving the block stops all

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group `proc` leads (it was started in its own session), then SIGKILL."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children in its group may still be finishing.
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break


def _stop_pid(pid: int) -> None:
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


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
