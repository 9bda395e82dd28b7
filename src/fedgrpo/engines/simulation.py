"""FedGRPO on Flower's Simulation runtime, in this process.

`flwr.simulation.run_simulation` runs the ServerApp in a thread of this process and each client as
a virtual SuperNode served by Ray actors, one CPU each (on a 2-core machine Flower's default of 2
CPUs per ClientApp would run one client at a time). Training is the embedded engine's code; only
how scoring requests reach the experts changes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.engines.deployment import NO_INSTALL
from fedgrpo.engines.environment import quiet_flower
from fedgrpo.errors import FedGRPOError
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.training.report import RunMetrics


def simulate(config: FedGRPOConfig, out: Path, progress: ProgressSink = NullProgress()) -> RunMetrics:
    """One FedGRPO run with one virtual SuperNode per client; returns its metrics."""
    from fedgrpo.engines.deployment import config_with_output
    from fedgrpo.engines.flower_app import make_client_app, make_server_app

    results: dict[str, Any] = {}
    # The virtual SuperNodes keep their own state (a privacy secret, a journal) under the run's output.
    simulate_apps(make_server_app(config, out, progress, results), make_client_app(config_with_output(config, out)),
                  num_supernodes=config.data.clients)
    if "metrics" not in results:
        raise FedGRPOError("the Flower simulation ended without a result; see the log above")
    return results["metrics"]


def simulate_apps(server_app: Any, client_app: Any, num_supernodes: int, cpus_per_client: float = 1.0) -> None:
    """Any ServerApp and ClientApp on Flower's Simulation runtime, quietly, without installing."""
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
