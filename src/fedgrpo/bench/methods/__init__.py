"""Every method of the comparison: one module each (its runner and rows), one registry.

Adding a method is one file (a runner returning a `MethodResult`, and its `Method` row) and one row
here. The registry drives everything else: `fedgrpo bench --methods` (choices and help), the bench's
plan, its goals (`Method.share_goal`, `Method.byte_ratio_goal`, and "FedGRPO beats every baseline")
and its report (labels, who sees answers, knobs).
"""

from __future__ import annotations

from fedgrpo.bench.methods import dpsda, fedgrpo, fedpetuning, zero_shot
from fedgrpo.bench.methods.base import (
    Method,
    MethodResult,
    accuracy_curve,
    method_config,
    run_method,
)

REGISTRY: tuple[Method, ...] = (
    zero_shot.ZERO_SHOT,
    fedgrpo.CENTRAL_GRPO,
    fedgrpo.FEDGRPO,
    fedgrpo.ANSWERS,
    fedgrpo.RANDOM,
    fedgrpo.ORACLE,
    fedgrpo.DP_EXPERTS,
    fedpetuning.SFT,
    fedpetuning.GRPO,
    dpsda.SFT,
    dpsda.GRPO,
)
METHODS: dict[str, Method] = {m.name: m for m in REGISTRY}

__all__ = ["METHODS", "REGISTRY", "Method", "MethodResult", "accuracy_curve", "method_config", "run_method"]


def method_help() -> str:
    """One line per method for `fedgrpo bench --help`."""
    return "; ".join(f"{m.name} ({m.label})" for m in REGISTRY)
