"""FedGRPO: federated GRPO with group-relative rewards from private domain experts.

The public surface is small and imports no torch, transformers, trl or flwr:

    >>> from fedgrpo import load_config
    >>> load_config(overrides={"aux_size": 50}).data.aux_size
    50

Heavy work lives in `fedgrpo.training.prepare.prepare` and `fedgrpo.training.evaluate`.
"""

from fedgrpo.config import FedGRPOConfig, load_config
from fedgrpo.errors import ConfigError, FedGRPOError

__all__ = ["ConfigError", "FedGRPOConfig", "FedGRPOError", "load_config"]
__version__ = "0.1.0"
