"""A run's report: the typed `RunMetrics`, `metrics.json` and the plots (matplotlib, headless).

`RunMetrics` is what every engine's run returns and what `metrics.json` holds (plus the resolved
config under "config"). Its JSON keys are the file format: benchmarks and tests read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.durable import write_json_atomic
from fedgrpo.training.evaluate import DomainScore


@dataclass(frozen=True)
class RunMetrics:
    """Everything a run measured. Seconds are wall-clock; bytes follow `core.comm`'s byte model."""

    mode: str  # "experts" (no answers) or "ground_truth"
    engine: str
    accuracy_before: dict[str, DomainScore]  # domain -> held-out greedy scores of the base
    accuracy_after: dict[str, DomainScore]  # ... of the trained server
    reward_curve: list[dict[str, Any]]  # {"step", "reward", "reward_std"} per logged step
    # totals, per_expert, per_step (payload bytes), wire_totals (the messages serialized as they
    # travel), stale_replies, refused_replies (by expert), scoring_shape (what the scoring messages
    # held, `transport.session`), quantisation_error (the largest 8-bit rounding a local client sent)
    bytes: dict[str, Any]
    routing: dict[str, Any] | None  # hit_rate, table, method (None: ground truth asks no expert)
    graph: dict[str, Any]  # per_domain, overall, calibration_failures
    failures: dict[str, int]  # expert id -> failed scoring requests
    failure_details: list[dict[str, Any]]  # the first 50 failures
    # Experts lost during training and how many of their questions went to the next-best expert.
    lost_experts: dict[str, str]
    rerouted_questions: dict[str, int]
    wall_time_s: float
    # Seconds per optimizer step of this session (the first one includes TRL's warm-up), the seconds
    # training waited for expert rewards, and the seconds the transport round trips took (scoring
    # included). Waiting is less than the round trips when overlap_rewards hides them behind training.
    step_seconds: list[float]
    reward_wait_s: float
    reward_round_trips_s: list[float]
    overlap_rewards: bool
    timings_s: dict[str, float]  # phase -> seconds
    final_model: str
    # Local DP (config ``privacy``; None when off): mechanism, epsilon per value, delta, budget, values
    # released and epsilon spent per client, clients stopped by their budget.
    privacy: dict[str, Any] | None = None
    # Per step, the mean over clients of the share of advantage signs their noise preserved (the
    # clients' own logs, read where they run in this process: the embedded engine).
    reward_fidelity: list[dict[str, Any]] | None = None
    # The dishonest-expert re-check (config probe_share; None when off): per expert, probe groups and
    # values, agreements, spot-check items and paired values, estimated accuracy, whether and when it
    # was flagged, and its response (excluded or corrected).
    expert_checks: dict[str, Any] | None = None
    # The same greedy scores on the validation split (empty without one): where choices are made.
    validation_before: dict[str, DomainScore] = field(default_factory=dict)
    validation_after: dict[str, DomainScore] = field(default_factory=dict)
    # Why a domain may not move, found before training (`training.diagnose`): one dict per finding.
    diagnostics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_before(self) -> float:
        return _mean_pass(self.accuracy_before)

    @property
    def mean_after(self) -> float:
        return _mean_pass(self.accuracy_after)

    @property
    def gain_points(self) -> float:
        return round(100 * (self.mean_after - self.mean_before), 2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`metrics.json` without its "config"), keys in the file's order."""
        return {
            "mode": self.mode,
            "accuracy_before": {d: s.to_dict() for d, s in self.accuracy_before.items()},
            "accuracy_after": {d: s.to_dict() for d, s in self.accuracy_after.items()},
            "mean_before": self.mean_before,
            "mean_after": self.mean_after,
            "gain_points": self.gain_points,
            "validation": {
                "before": {d: s.to_dict() for d, s in self.validation_before.items()},
                "after": {d: s.to_dict() for d, s in self.validation_after.items()},
                "gain_points": (round(100 * (_mean_pass(self.validation_after) - _mean_pass(self.validation_before)), 2)
                                if self.validation_before and self.validation_after else None),
            },
            "reward_curve": self.reward_curve,
            "bytes": self.bytes,
            "routing": self.routing,
            "graph": self.graph,
            "failures": self.failures,
            "lost_experts": self.lost_experts,
            "rerouted_questions": self.rerouted_questions,
            "engine": self.engine,
            "failure_details": self.failure_details,
            "wall_time_s": self.wall_time_s,
            "step_seconds": self.step_seconds,
            "reward_wait_s": self.reward_wait_s,
            "reward_round_trip_s": round(sum(self.reward_round_trips_s), 4),
            "reward_round_trips_s": [round(x, 4) for x in self.reward_round_trips_s],
            "overlap_rewards": self.overlap_rewards,
            "timings_s": self.timings_s,
            "final_model": self.final_model,
            "privacy": self.privacy,
            "reward_fidelity": self.reward_fidelity,
            "expert_checks": self.expert_checks,
            "diagnostics": self.diagnostics,
        }


def _mean_pass(scores: dict[str, DomainScore]) -> float:
    return sum(s.pass_at_1 for s in scores.values()) / len(scores)


def write_run_outputs(config: FedGRPOConfig, metrics: RunMetrics, out: Path) -> dict[str, Any]:
    """`metrics.json` (atomically: a failed run leaves none) and the plots; returns the JSON dict."""
    payload = {"config": config.to_flat(), **metrics.to_dict()}
    write_plots(payload, out)
    write_json_atomic(out / "metrics.json", payload)
    return payload


def write_plots(metrics: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    paths = []
    curve = [p for p in metrics["reward_curve"] if p.get("reward") is not None]
    if curve:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p["step"] for p in curve], [p["reward"] for p in curve], lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean reward")
        ax.set_title(f"Reward per step ({metrics['mode']})")
        fig.tight_layout()
        paths.append(out / "reward.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    before, after = metrics["accuracy_before"], metrics["accuracy_after"]
    domains = list(before)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(domains))
    ax.bar([i - 0.2 for i in x], [100 * before[d]["pass_at_1"] for d in domains], 0.4, label="before")
    ax.bar([i + 0.2 for i in x], [100 * after[d]["pass_at_1"] for d in domains], 0.4, label="after")
    ax.set_xticks(list(x), domains)
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_title("Accuracy per domain")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
