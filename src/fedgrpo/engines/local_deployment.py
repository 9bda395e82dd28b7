"""A whole Flower Deployment on this machine's loopback: `fedgrpo up` and the CI test.

`LocalDeployment` starts a SuperLink and one SuperNode per site on 127.0.0.1 (TLS with a throw-away
CA, SuperNode authentication with per-node keys), each SuperNode a `fedgrpo supernode`;
`start_local_federation` adds one `fedgrpo expert serve` per client and connects them;
`run_local_deployment` runs one FedGRPO run through it and stops every process, whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.engines.deployment import (
    CONNECTION,
    NO_INSTALL,
    config_with_output,
    flwr_executable,
    managed_superlink_pids,
    stop_pid,
    submit_run,
    write_flower_home,
)
from fedgrpo.errors import FedGRPOError


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
            # `fedgrpo supernode`: flower-supernode with its poll sleeps cut (see engines/supernode.py).
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
            stop_pid(pid)

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


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# --- a federation of expert services and SuperNodes, and one run through it --------------------------

def start_local_federation(config: FedGRPOConfig, workdir: Path, *, tls: bool = True, auth: bool = True,
                           log: Callable[[str], Any] = print, ready_timeout_s: float = 1800.0,
                           fast_supernodes: bool = True) -> LocalDeployment:
    """One expert service and one SuperNode per client and a SuperLink, all on 127.0.0.1, started
    and connected; the caller must `stop()` the returned `LocalDeployment` (it is a context manager
    for `stop` too). The server's base model is prepared first: the expert services would
    otherwise all build the shared base at once. The SuperNodes are `fedgrpo supernode` (fast
    polling) unless `fast_supernodes=False` (plain `flower-supernode`)."""
    from fedgrpo.data.partition import expert_ids
    from fedgrpo.training.prepare import prepare

    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config_file.write_text(config.to_yaml())
    deployment = LocalDeployment(workdir, [], tls=tls, auth=auth, log=log, fast_supernodes=fast_supernodes)
    try:
        prepare(config, experts=False)
        ready = {expert_id: workdir / f"{expert_id}.url" for expert_id in expert_ids(config.data.clients)}
        for expert_id, ready_file in ready.items():
            ready_file.unlink(missing_ok=True)
            # All sites share this machine's cores: one torch thread per expert service, or N
            # services scoring at once oversubscribe the cores (a real site keeps torch's default).
            deployment.spawn(f"expert-{expert_id}", [
                sys.executable, "-m", "fedgrpo.cli", "expert", "serve", "--expert-id", expert_id,
                "--port", "0", "--ready-file", str(ready_file), "--config", str(config_file),
                "--state-dir", str(workdir / "clients" / expert_id)],
                extra_env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        _wait_for_expert_services(deployment, ready, ready_timeout_s)
        deployment.node_configs = [f'expert-url="{path.read_text().strip()}"' for path in ready.values()]
        log(f"SuperLink on {deployment.address} ({'TLS' if tls else 'no TLS'}, "
            f"{'SuperNode authentication' if auth else 'no SuperNode authentication'}), "
            f"{len(ready)} SuperNodes with their expert services")
        deployment.start()
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _wait_for_expert_services(deployment: LocalDeployment, ready: dict[str, Path], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(path.is_file() for path in ready.values()):
        for expert_id in ready:
            if deployment.names[f"expert-{expert_id}"].poll() is not None:
                raise FedGRPOError(f"the expert service of {expert_id} exited; see "
                                   f"{deployment.workdir / 'logs' / f'expert-{expert_id}.log'}")
        if time.monotonic() > deadline:
            raise FedGRPOError(f"the expert services were not ready within {timeout_s:g} s")
        time.sleep(0.2)


def run_local_deployment(config: FedGRPOConfig, out: Path, *, tls: bool = True, auth: bool = True,
                         log: Callable[[str], Any] = print, ready_timeout_s: float = 1800.0,
                         on_started: Callable[[LocalDeployment], Any] | None = None,
                         fast_supernodes: bool = True) -> dict[str, Any]:
    """`fedgrpo up`: `start_local_federation`, one run through it, then every process stopped,
    whatever happened; returns metrics.json's content. `on_started(deployment)` runs in a thread
    once the run is submitted (tests use it to stop a site mid-run)."""
    out = out.resolve()
    workdir = out / "deployment"
    config = config_with_output(config, out)
    metrics_path = out / "metrics.json"
    with start_local_federation(config, workdir, tls=tls, auth=auth, log=log,
                                ready_timeout_s=ready_timeout_s, fast_supernodes=fast_supernodes) as deployment:
        if on_started is not None:
            threading.Thread(target=on_started, args=(deployment,), daemon=True).start()
        metrics_path.unlink(missing_ok=True)
        submit_run(config.to_run_config_toml(), deployment.address, deployment.root_certificates,
                   workdir / "app", home=deployment.home)
    if not metrics_path.is_file():
        raise FedGRPOError(f"the Flower run ended without writing {metrics_path}; see {workdir / 'logs'}")
    return json.loads(metrics_path.read_text())
