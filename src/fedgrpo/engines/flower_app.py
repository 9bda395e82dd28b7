"""The Flower App's components, built here; `fedgrpo.apps` holds the two objects `flwr run` loads.

- ServerApp (`make_server_app`): its `main` runs `engines.run.run` with a `FlowerTransport` over the
  grid. With a config (in-process Simulation) it hands the metrics back; without one (a Deployment,
  where it runs in its own process next to the SuperLink) it reads the run config and writes the
  results files itself.
- ClientApp (`make_client_app`): answers `query.hello`, `query.calibrate` and `query.score` with the
  node's expert (`site_expert`). Who it is comes from `node_config`: `expert-url` (deployment:
  forward to the site's persistent `fedgrpo expert serve`), else `expert-id` or Flower's
  `partition-id` (simulation: the expert is built here from the run config and kept loaded, behind
  its `ClientEndpoint`, in a per-process cache, since Ray actors serve many messages; the actors that
  serve one node share its session's question texts through the site's state directory); optional
  `data-path`, `model-dir` and `domain` give the site's own private data and expert model.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedgrpo.config import FedGRPOConfig
from fedgrpo.errors import ConfigError
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.transport.base import Endpoint
from fedgrpo.transport.flower_client import (
    error_reply,
    handle_calibrate,
    handle_hello,
    handle_score,
)

# --- client side ----------------------------------------------------------------------------------

# Per-process cache of loaded experts (behind their endpoints): Ray keeps ClientApp actors alive across
# messages and one actor serves several virtual SuperNodes, so the key names the expert (and the
# config it was built for).
_EXPERTS: dict[tuple[Any, ...], Endpoint] = {}
_EXPERTS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _config_from_run_config(items: tuple[tuple[str, Any], ...]) -> FedGRPOConfig:
    """Parsed once per run config and process: parsing costs ~10 ms, and a Ray worker answers every
    message of a run with the same run config."""
    return FedGRPOConfig.from_run_config(dict(items))


def site_expert(context: Context, config: FedGRPOConfig | None = None) -> Endpoint:
    """The expert this node serves, as the wire reaches it, from its node_config (see the module
    docstring)."""
    node = context.node_config
    if "expert-url" in node:
        from fedgrpo.engines.expert_service import RemoteExpert

        timeout = float(context.run_config.get("expert-timeout-s", 600.0))
        return RemoteExpert(str(node["expert-url"]), timeout_s=timeout)
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
            from fedgrpo.engines.experts import build_site_expert, site_state_dir
            from fedgrpo.transport.session import ClientEndpoint

            # The site's question texts are shared by every Ray worker that serves it (its state dir).
            _EXPERTS[key] = ClientEndpoint(build_site_expert(config, expert_id, **own),
                                           store=site_state_dir(config, expert_id) / "texts")
        return _EXPERTS[key]


def make_client_app(config: FedGRPOConfig | None = None) -> ClientApp:
    """A ClientApp; `config` overrides the run config (the in-process simulation passes it)."""
    app = ClientApp()

    def answer(handler: Any) -> Any:
        def on_message(message: Message, context: Context) -> Message:
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
                builds_expert_models: bool, max_poll_s: float = 0.1) -> Any:
    """`engines.run.run` with the experts behind a Flower grid (see FlowerTransport for `max_poll_s`)."""
    from fedgrpo.data.prompts import PromptStyle
    from fedgrpo.engines.run import Connector, run
    from fedgrpo.transport.flower_transport import FlowerTransport

    def connect(prepared: Any, out: Path) -> FlowerTransport:
        return FlowerTransport(grid, [s.expert_id for s in prepared.splits.clients],
                               timeout_s=config.federation.expert_timeout_s,
                               node_wait_s=config.engine.node_wait_s, max_poll_s=max_poll_s,
                               style=PromptStyle.from_config(config.prompts))

    return run(config, out, progress, connector=Connector(connect, builds_expert_models))


def make_server_app(config: FedGRPOConfig | None = None, out: Path | None = None,
                    progress: ProgressSink = NullProgress(), results: dict[str, Any] | None = None) -> ServerApp:
    """A ServerApp. Without `config` it reads the run config and writes the results files itself
    (deployment: it runs in its own process); with it, it hands the metrics back in `results`."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is not None:
            assert out is not None and results is not None
            # In-process Simulation: pulling from the in-memory grid costs microseconds, poll often.
            results["metrics"] = run_on_grid(grid, config, out, progress, builds_expert_models=True,
                                             max_poll_s=0.01)
            return
        serve_deployment_run(grid, context)

    return app


def serve_deployment_run(grid: Grid, context: Context) -> None:
    """The ServerApp's own process on a Deployment: set up, run, write the results files."""
    from fedgrpo.engines.environment import prepare_process
    from fedgrpo.engines.flower_patches import patch_serverapp_grid
    from fedgrpo.training.report import write_run_outputs

    prepare_process()  # the same quiet, offline process as the CLI
    patch_serverapp_grid()
    config = FedGRPOConfig.from_run_config(dict(context.run_config))
    if not config.output.output_dir:
        raise ConfigError("the run config has no output-dir: set it so the results have a place")
    target = Path(config.output.output_dir).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(config.to_yaml())
    metrics = run_on_grid(grid, config, target, builds_expert_models=False)
    write_run_outputs(config, metrics, target)
