"""User-facing errors.

A `FedGRPOError` is a mistake the user can fix (bad config, missing path, ...). The CLI prints its
message on one line and exits with status 2; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class FedGRPOError(Exception):
    """A user mistake; the message names the fix."""


class ConfigError(FedGRPOError, ValueError):
    """An invalid configuration value or combination."""
