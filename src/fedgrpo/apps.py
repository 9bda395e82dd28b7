"""The Flower App (`[tool.flwr.app.components]` in pyproject.toml) and the engine switch.

- `server_app`: its `main` runs the same pipeline as the embedded engine (`training.run.run`), with a
  `FlowerTransport` over the grid instead of in-process experts; the config comes from the run
  config (`FedGRPOConfig.from_run_config`), the results go to `output_dir`.
- `client_app`: answers `query.hello`, `query.calibrate` and `query.score`. Who it is comes from
  `node_config`: `expert-url` (deployment: forward to the site's persistent `fedgrpo expert serve`),
  else `expert-id` or Flower's `partition-id` (simulation: the expert is built here from the run
  config and kept loaded in a per-process cache, since Ray actors serve many messages); optional
  `data-path`, `model-dir` and `domain` give the site's own private data and expert model.
- `run_engine`: `fedgrpo run` on the configured engine; every engine writes the same results files.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedgrpo.config import FedGRPOConfig
from fedgrpo.errors import ConfigError, FedGRPOError
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.transport.flower_client import SiteExpert, handle_calibrate, handle_hello, handle_score

# --- client side ----------------------------------------------------------------------------------

# Per-process cache of loaded experts: Ray keeps ClientApp actors alive across messages and one actor
# serves several virtual SuperNodes, so the key names the expert (and the config it was built for).
_EXPERTS: dict[tuple[Any, ...], SiteExpert] = {}
_EXPERTS_LOCK = threading.Lock()


class LocalSiteExpert:
    """An in-process expert with its identity: what a simulated SuperNode and the expert service hold.

    By default the site's private shard and expert model come from the shared config (the built-in
    federation, each site regenerating its own shard). A real site brings its own: `data_path` (its
    questions with trusted answers, `fedgrpo.data.local`) and/or `model_dir` (its expert model, a
    local Hugging Face directory). Given data but no model, the expert is the config's base model
    fine-tuned on that data (cached like every model)."""

    def __init__(self, config: FedGRPOConfig, expert_id: str, *, data_path: str | None = None,
                 model_dir: str | None = None, domain: str | None = None) -> None:
        from fedgrpo.training.prepare import prepare_expert, prepare_site_expert
        from fedgrpo.training.run import make_expert_client

        if data_path is None and model_dir is None:
            shard, resolved_model = prepare_expert(config, expert_id)
            questions, site_domain = shard.questions, shard.main_domain
        else:
            questions, site_domain, resolved_model = prepare_site_expert(
                config, expert_id, data_path=data_path, model_dir=model_dir, domain=domain)
        self.expert_id, self.domain = expert_id, domain or site_domain
        self.client = make_expert_client(config, expert_id, questions, resolved_model)

    def hello(self) -> tuple[str, str]:
        return self.expert_id, self.domain

    def calibrate(self, request: Any) -> Any:
        return self.client.calibrate(request)

    def score(self, request: Any) -> Any:
        return self.client.score(request)


@functools.lru_cache(maxsize=8)
def _config_from_run_config(items: tuple[tuple[str, Any], ...]) -> FedGRPOConfig:
    """Parsed once per run config and process: parsing costs ~10 ms, and a Ray worker answers every
    message of a run with the same run config."""
    return FedGRPOConfig.from_run_config(dict(items))


def site_expert(context: Context, config: FedGRPOConfig | None = None) -> SiteExpert:
    """The expert this node serves, from its node_config (see the module docstring)."""
    node = context.node_config
    if "expert-url" in node:
        from fedgrpo.transport.expert_service import ExpertServiceClient

        timeout = float(context.run_config.get("expert-timeout-s", 600.0))
        return ExpertServiceClient(str(node["expert-url"]), timeout_s=timeout)
    config = config or _config_from_run_config(tuple(sorted(context.run_config.items())))
    if "expert-id" in node:
        expert_id = str(node["expert-id"])
    elif "partition-id" in node:
        from fedgrpo.data.partition import expert_ids

        ids = expert_ids(config.data.clients)
        partition = int(node["partition-id"])
        if not 0 <= partition < len(ids):
            raise ConfigError(f"partition-id {partition} is outside the {len(ids)} clients of this config")
        expert_id = ids[partition]
    else:
        raise ConfigError("node_config names no expert: give expert-url (deployment), expert-id or partition-id")
    # A site's own data and model, if its node_config names them (else the config's shard).
    own = {name: str(node[key]) if key in node else None
           for name, key in (("data_path", "data-path"), ("model_dir", "model-dir"), ("domain", "domain"))}
    key = (config, expert_id, *own.values())  # the config is a frozen, hashable dataclass
    with _EXPERTS_LOCK:
        if key not in _EXPERTS:
            _EXPERTS[key] = LocalSiteExpert(config, expert_id, **own)
        return _EXPERTS[key]


def make_client_app(config: FedGRPOConfig | None = None) -> ClientApp:
    """A ClientApp; `config` overrides the run config (the in-process simulation passes it)."""
    app = ClientApp()

    def answer(handler: Any) -> Any:
        def on_message(message: Message, context: Context) -> Message:
            from fedgrpo.transport.flower_client import error_reply

            try:
                expert = site_expert(context, config)
            except Exception as exc:  # noqa: BLE001 - an error reply, never a stalled run
                return error_reply(message, exc)
            return handler(message, expert)

        return on_message

    app.query("hello")(answer(handle_hello))
    app.query("calibrate")(answer(handle_calibrate))
    app.query("score")(answer(handle_score))
    return app


# --- server side ----------------------------------------------------------------------------------

def run_on_grid(grid: Grid, config: FedGRPOConfig, out: Path, progress: ProgressSink = NullProgress(), *,
                prepare_experts: bool, max_poll_s: float = 0.1) -> Any:
    """`training.run.run` with the experts behind a Flower grid (see FlowerTransport for `max_poll_s`)."""
    from fedgrpo.training.run import run
    from fedgrpo.transport.flower_transport import FlowerTransport

    def connect(prepared: Any, expert_ids: Any) -> FlowerTransport:
        return FlowerTransport(grid, expert_ids, timeout_s=config.federation.expert_timeout_s,
                               node_wait_s=config.engine.node_wait_s, max_poll_s=max_poll_s)

    return run(config, out, progress, transport_factory=connect, prepare_experts=prepare_experts)


def make_server_app(config: FedGRPOConfig | None = None, out: Path | None = None,
                    progress: ProgressSink = NullProgress(), results: dict[str, Any] | None = None) -> ServerApp:
    """A ServerApp. Without `config` it reads the run config and writes the results files itself
    (deployment: it runs in its own process); with it, it hands the result back in `results`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is not None:
            assert out is not None and results is not None
            # In-process Simulation: pulling from the in-memory grid costs microseconds, poll often.
            results["result"] = run_on_grid(grid, config, out, progress, prepare_experts=True, max_poll_s=0.01)
            return
        from fedgrpo.cli import quiet_libraries

        quiet_libraries()  # this process is the ServerApp's own: same quiet output as the CLI
        from flwr.superlink.grid import http_grid

        from fedgrpo.transport.flower_supernode import retry_object_pulls_sooner

        # A reply is listed before its objects have all reached the SuperLink: retry in 20 ms, not 1 s.
        retry_object_pulls_sooner(http_grid, "pull_objects")
        cfg = FedGRPOConfig.from_run_config(dict(context.run_config))
        if not cfg.output.output_dir:
            raise ConfigError("the run config has no output-dir: set it so the results have a place")
        target = Path(cfg.output.output_dir).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.yaml").write_text(cfg.to_yaml())
        result = run_on_grid(grid, cfg, target, prepare_experts=False)
        write_run_outputs(cfg, result.metrics, target)

    return app


server_app = make_server_app()
client_app = make_client_app()


# --- the engine switch ----------------------------------------------------------------------------

def write_run_outputs(config: FedGRPOConfig, metrics: dict[str, Any], out: Path) -> None:
    from fedgrpo.report import write_plots

    write_plots(metrics, out)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps({"config": config.to_flat(), **metrics}, indent=2))
    os.replace(tmp, out / "metrics.json")


def run_engine(config: FedGRPOConfig, out: Path, progress: ProgressSink = NullProgress()) -> dict[str, Any]:
    """Run FedGRPO on `config.engine.engine`, write metrics.json and the plots, return the metrics."""
    engine = config.engine.engine
    if engine == "embedded" or config.data.use_ground_truth:
        from fedgrpo.training.run import run

        metrics = run(config, out, progress).metrics
    elif engine == "simulation":
        from fedgrpo.transport.flower_runtime import simulate

        results: dict[str, Any] = {}
        simulate(make_server_app(config, out, progress, results), make_client_app(config),
                 num_supernodes=config.data.clients)
        if "result" not in results:
            raise FedGRPOError("the Flower simulation ended without a result; see the log above")
        metrics = results["result"].metrics
    else:
        from fedgrpo.transport.flower_runtime import submit_run

        metrics_path = out / "metrics.json"
        metrics_path.unlink(missing_ok=True)
        resolved = config_with_output(config, out)
        submit_run(resolved.to_run_config_toml(), config.engine.superlink_address,
                   config.engine.superlink_root_certificates, out / "flower-app")
        if not metrics_path.is_file():
            raise FedGRPOError(f"the Flower run ended without writing {metrics_path}; see its log above")
        return json.loads(metrics_path.read_text())
    write_run_outputs(config, metrics, out)
    return {"config": config.to_flat(), **metrics}


def config_with_output(config: FedGRPOConfig, out: Path) -> FedGRPOConfig:
    from dataclasses import replace

    return replace(config, output=replace(config.output, output_dir=str(out.resolve())))


def start_local_federation(config: FedGRPOConfig, workdir: Path, *, tls: bool = True, auth: bool = True,
                           log: Any = print, ready_timeout_s: float = 1800.0,
                           fast_supernodes: bool = True) -> Any:
    """One expert service and one SuperNode per client and a SuperLink, all on 127.0.0.1, started
    and connected; the caller must `stop()` the returned `LocalDeployment` (it is a context manager
    for `stop` too). The server's base model is prepared first: the expert services would
    otherwise all build the shared base at once. The SuperNodes are `fedgrpo supernode` (fast
    polling) unless `fast_supernodes=False` (plain `flower-supernode`)."""
    import sys
    import time

    from fedgrpo.data.partition import expert_ids
    from fedgrpo.training.prepare import prepare
    from fedgrpo.transport.flower_runtime import LocalDeployment

    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config_file.write_text(config.to_yaml())
    deployment = LocalDeployment(workdir, [], tls=tls, auth=auth, log=log, fast_supernodes=fast_supernodes)
    try:
        prepare(config, experts=False)
        ready = {}
        for expert_id in expert_ids(config.data.clients):
            ready[expert_id] = workdir / f"{expert_id}.url"
            ready[expert_id].unlink(missing_ok=True)
            # All sites share this machine's cores: one torch thread per expert service, or N
            # services scoring at once oversubscribe the cores (a real site keeps torch's default).
            deployment.spawn(f"expert-{expert_id}", [
                sys.executable, "-m", "fedgrpo.cli", "expert", "serve", "--expert-id", expert_id,
                "--port", "0", "--ready-file", str(ready[expert_id]), "--config", str(config_file)],
                extra_env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        deadline = time.monotonic() + ready_timeout_s
        while not all(path.is_file() for path in ready.values()):
            for expert_id in ready:
                if deployment.names[f"expert-{expert_id}"].poll() is not None:
                    raise FedGRPOError(f"the expert service of {expert_id} exited; see "
                                       f"{workdir / 'logs' / f'expert-{expert_id}.log'}")
            if time.monotonic() > deadline:
                raise FedGRPOError(f"the expert services were not ready within {ready_timeout_s:g} s")
            time.sleep(0.2)
        deployment.node_configs = [f'expert-url="{path.read_text().strip()}"' for path in ready.values()]
        log(f"SuperLink on {deployment.address} ({'TLS' if tls else 'no TLS'}, "
            f"{'SuperNode authentication' if auth else 'no SuperNode authentication'}), "
            f"{len(ready)} SuperNodes with their expert services")
        deployment.start()
    except BaseException:
        deployment.stop()
        raise
    return deployment


def run_local_deployment(config: FedGRPOConfig, out: Path, *, tls: bool = True, auth: bool = True,
                         log: Any = print, ready_timeout_s: float = 1800.0,
                         on_started: Any = None, fast_supernodes: bool = True) -> dict[str, Any]:
    """`fedgrpo up`: `start_local_federation`, one run through it, then every process stopped,
    whatever happened. `on_started(deployment)` runs in a thread once the run is submitted (tests
    use it to stop a site mid-run)."""
    import threading

    from fedgrpo.transport.flower_runtime import submit_run

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
