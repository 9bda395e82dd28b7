"""Process set-up: what a FedGRPO process does once before its work, never at import time.

Every entry point that runs FedGRPO work calls `prepare_process` first: the CLI, the ServerApp's
own process on a Deployment, an expert service, the warm ClientApp. It keeps the process offline
(nothing is downloaded: models are local), without telemetry, and quiet: library chatter would
break the progress bars, and FedGRPO reports what matters (failures, lost experts) itself.
Settings already in the environment win.
"""

from __future__ import annotations

import logging
import os
import warnings

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def prepare_process() -> None:
    """Offline, no telemetry, no library chatter between FedGRPO's own output."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # math-verify warns once per process that we run it without signal timeouts, which we do on
    # purpose (it scores in worker threads).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    quiet_flower()


def quiet_flower() -> None:
    """Flower logs every round at INFO and warns that `run_simulation` is deprecated; keep its errors."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
