"""FedGRPO and its variants, and Central-GRPO (the same GRPO with every gold answer at the server): one
run of `engines.switch.run_engine` each, on the configured engine; the run's traffic ledger is the
method's messages (payload and wire bytes of each), and what its scoring messages held (its
``scoring_shape``) is the schedule of the closed forms at the paper's scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedgrpo.bench.methods.base import Method, MethodResult
from fedgrpo.config import FedGRPOConfig
from fedgrpo.durable import write_json_atomic
from fedgrpo.progress import ProgressSink
from fedgrpo.transport.base import as_record


def run(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink) -> MethodResult:
    from fedgrpo.engines.switch import run_engine

    metrics = run_engine(config, out, progress)
    # The run evaluated its final model already: its scores become the method's (no second pass).
    write_json_atomic(out / "after.json", metrics["accuracy_after"])
    if metrics.get("validation", {}).get("after"):
        write_json_atomic(out / "after-val.json", metrics["validation"]["after"])
    messages = ledger_messages(out / "traffic.jsonl")
    facts = {"routing_hit_rate": (metrics.get("routing") or {}).get("hit_rate"),
             "failures": metrics.get("failures", {}), "engine": config.engine.engine,
             "privacy": metrics.get("privacy"), "scoring_shape": metrics.get("bytes", {}).get("scoring_shape"),
             "quantisation_error": metrics.get("bytes", {}).get("quantisation_error")}
    return MethodResult(Path(metrics["final_model"]), messages, metrics["reward_curve"], facts)


def ledger_messages(traffic: Path) -> list[list[Any]]:
    """A run's ledger file (`transport.base.LedgerFile`): every message, both ways, as ``[phase, step,
    expert, direction, bytes, wire bytes]`` (ground truth has none; an older file: wire bytes None)."""
    if not traffic.is_file():
        return []
    return [list(as_record(json.loads(line))) for line in traffic.read_text().splitlines() if line.strip()]


def _dp_like_dpsda(config: FedGRPOConfig) -> dict[str, Any]:
    """DP experts at DPSDA-FL's (epsilon, delta): the two rows then carry the same guarantee, per
    record of a client's private data."""
    from fedgrpo.privacy.accounting import default_delta

    b = config.baselines
    return {"expert_epsilon": b.dpsda_epsilon,
            "expert_delta": b.dpsda_delta if b.dpsda_delta is not None else default_delta(config.data.client_size)}


CENTRAL_GRPO = Method("central_grpo", "Central-GRPO", run, {"use_ground_truth": True}, answers="the server",
                      role="reference",
                      about="GRPO with every gold answer of the training questions at the server (upper bound)")
FEDGRPO = Method("fedgrpo", "FedGRPO (no answers)", run, role="ours", share_goal=0.95,
                 about="confidence-graph selection, model-based expert rewards (the paper's Table 2)")
ANSWERS = Method("fedgrpo_answers", "FedGRPO (answer-based)", run,
                 {"pool_answers_at_clients": True, "scorer_mode": "gated"}, answers="the clients", share_goal=1.0,
                 about="clients hold the training questions of their domain with answers (the paper's Table 1)")
RANDOM = Method("fedgrpo_random", "FedGRPO, random experts", run, {"selection": "random"},
                about="M experts drawn at random per question (the official code)")
ORACLE = Method("fedgrpo_oracle", "FedGRPO, domain oracle", run, {"selection": "oracle"}, in_default_plan=False,
                about="the question's own domain expert first (the official code's no-answer mode; with one expert "
                      "per domain it routes as the confidence graph does, so the full bench leaves it out)")
DP_EXPERTS = Method("fedgrpo_dp", "FedGRPO, DP experts", run, _dp_like_dpsda,
                    knobs=("expert_epsilon", "expert_delta"),
                    about="every expert trained with DP-SGD at DPSDA-FL's (epsilon, delta) per record: the whole run "
                          "at that guarantee")
