"""`run_engine`: `fedgrpo run` on the configured engine; every engine writes the same results files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.engines.deployment import config_with_output, submit_run
from fedgrpo.engines.run import run
from fedgrpo.errors import FedGRPOError
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.training.report import write_run_outputs


def run_engine(config: FedGRPOConfig, out: Path, progress: ProgressSink = NullProgress()) -> dict[str, Any]:
    """Run FedGRPO on ``config.engine.engine``; write metrics.json and the plots; return metrics.json's
    content. Ground truth asks no expert, so it runs in this process on every engine."""
    engine = config.engine.engine
    if engine == "embedded" or config.data.use_ground_truth:
        return write_run_outputs(config, run(config, out, progress), out)
    if engine == "simulation":
        from fedgrpo.engines.simulation import simulate

        return write_run_outputs(config, simulate(config, out, progress), out)
    # Deployment: the ServerApp runs next to the SuperLink and writes metrics.json itself.
    metrics_path = out / "metrics.json"
    metrics_path.unlink(missing_ok=True)
    submit_run(config_with_output(config, out).to_run_config_toml(), config.engine.superlink_address,
               config.engine.superlink_root_certificates, out / "flower-app")
    if not metrics_path.is_file():
        raise FedGRPOError(f"the Flower run ended without writing {metrics_path}; see its log above")
    return json.loads(metrics_path.read_text())
