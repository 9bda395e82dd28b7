"""FedGRPO: federated GRPO with group-relative rewards from private domain experts.

The public surface is small and imports no torch, transformers, trl or flwr:

    >>> from fedgrpo import load_config
    >>> load_config(overrides={"aux_size": 50}).data.aux_size
    50

A whole run is `fedgrpo.engines.run.run(config, out)` (embedded engine) or
`fedgrpo.engines.switch.run_engine(config, out)` (the configured engine, results files written);
its phases live in `fedgrpo.training`.
"""

from fedgrpo.config import FedGRPOConfig, load_config
from fedgrpo.errors import ConfigError, FedGRPOError

__all__ = ["ConfigError", "FedGRPOConfig", "FedGRPOError", "load_config"]
__version__ = "0.1.0"
