"""Zero-shot: the untouched server model (every gain is measured from it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedgrpo.bench.methods.base import Method, MethodResult
from fedgrpo.config import FedGRPOConfig
from fedgrpo.progress import ProgressSink


def run(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink) -> MethodResult:
    return MethodResult(None)


ZERO_SHOT = Method("zero_shot", "Zero-shot", run, role="base", kind="zero_shot", about="the untouched server model")
