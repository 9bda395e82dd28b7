"""A FedGRPO run in named phases on any engine (the engine switch is `engines.switch.run_engine`).

The phases, each a function with a typed result, timed into ``timings_s``:

| phase | function | result | on resume |
|---|---|---|---|
| prepare | `training.prepare.prepare` | `Prepared` | models come from the cache |
| evaluate the base | `training.evaluate.evaluate_greedy` | scores per domain | read from ``before.json`` |
| connect | the engine's `Connector.open` | an `ExpertTransport` | connects again |
| calibrate and route | `training.calibrate.calibrate_and_route` | `Calibration` | ``graph.json`` read back |
| train | `training.policy.train_policy` | `TrainedPolicy` | from the last checkpoint |
| evaluate | `training.evaluate.evaluate_greedy` | scores per domain | |
| report | `training.report.RunMetrics` | the metrics | |

This module is the one place that decides how a transport is wrapped: failover (a lost expert's
questions go to the next-best expert, ``reroute_failed``) around the engine's transport, timing of
every round around that, and the traffic ledger mirrored to ``traffic.jsonl`` after every step
(read back on resume), and the scoring session (`transport.session`: its name, question numbers and
the texts each expert holds) journalled in ``scoring-session.jsonl``, so a resumed run sends what
the uninterrupted one sent. The transport is closed on every exit path. Ground truth asks no expert: no
connect, no calibration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.gym import is_correct
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.durable import write_json_atomic
from fedgrpo.engines.experts import embedded_transport
from fedgrpo.privacy.plan import PrivacyPlan
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.training.calibrate import Calibration, calibrate_and_route, mixed_probes
from fedgrpo.training.diagnose import log_findings, run_findings
from fedgrpo.training.evaluate import DomainScore, evaluate_greedy
from fedgrpo.training.policy import TrainedPolicy, train_policy
from fedgrpo.training.prepare import Prepared, prepare
from fedgrpo.training.report import RunMetrics
from fedgrpo.transport.base import ExpertTransport, LedgerFile, TrafficLedger
from fedgrpo.transport.failover import FailoverTransport
from fedgrpo.transport.recheck import ProbeBook, RecheckTransport
from fedgrpo.transport.timed import TimedTransport
from fedgrpo.types import FailureKind


@dataclass(frozen=True)
class Connector:
    """How a run reaches its experts: the engine's part of `run`."""

    open: Callable[[Prepared, Path], ExpertTransport]  # (prepared, the run's output directory)
    # Whether `prepare` builds the experts' models in this process (embedded, in-process Simulation);
    # on a Deployment each site prepares its own.
    builds_expert_models: bool = True


EMBEDDED = Connector(embedded_transport)


@dataclass(frozen=True)
class Federation:
    """The connect and calibrate phases' result: what training talks through, and how it routes."""

    transport: TimedTransport  # outermost wrapper: times every scoring round
    calibration: Calibration
    failover: FailoverTransport | None
    ledger_file: LedgerFile  # the traffic ledger's mirror, read back on resume, appended after each step
    base: ExpertTransport  # the engine's own transport, unwrapped (its clients' logs, where they are local)
    recheck: RecheckTransport | None = None  # the dishonest-expert check, when on


def run(config: FedGRPOConfig, out: Path, progress: ProgressSink = NullProgress(), *,
        connector: Connector = EMBEDDED) -> RunMetrics:
    """The whole pipeline, resumable: a rerun with the same `out` continues where this one stopped."""
    started, timings = time.perf_counter(), {}
    phase = _phase_clock(timings)
    style = PromptStyle.from_config(config.prompts)
    with ExitStack() as resources:
        with phase("prepare"):
            # Ground truth asks no expert: their models are not built.
            prepared = prepare(config, progress,
                               experts=connector.builds_expert_models and not config.data.use_ground_truth)
        with phase("evaluate_before"):
            before = evaluate_greedy(prepared.server_dir, prepared.splits.eval, config.evaluation, style, progress,
                                     "evaluate the base server (greedy)", cache=out / "before.json")
            dp_experts = dp_expert_accuracy(prepared, out, progress)
            val_before = evaluate_greedy(prepared.server_dir, prepared.splits.val, config.evaluation, style, progress,
                                         "evaluate the base server on validation", cache=out / "before-val.json")
        federation = None
        if not config.data.use_ground_truth:
            federation = connect_and_calibrate(prepared, connector, out, progress, resources, phase)
        diagnostics = log_findings(run_findings(prepared, before, federation and federation.calibration,
                                                federation and federation.base.expert_domains), progress.log)
        with phase("train"):
            trained = train_policy(
                prepared, out, progress, transport=federation.transport if federation else None,
                routing=federation.calibration.routing if federation else None,
                on_step=federation.ledger_file.flush if federation else _nothing)
            if federation:
                federation.ledger_file.flush()
    with phase("evaluate_after"):
        after = evaluate_greedy(trained.final_dir, prepared.splits.eval, config.evaluation, style, progress,
                                "evaluate the trained server (greedy)")
        val_after = evaluate_greedy(trained.final_dir, prepared.splits.val, config.evaluation, style, progress,
                                    "evaluate the trained server on validation")
    return collect_metrics(prepared, before, after, federation, trained, timings,
                           wall_time_s=time.perf_counter() - started, validation=(val_before, val_after),
                           diagnostics=diagnostics, expert_accuracy=dp_experts)


def connect_and_calibrate(prepared: Prepared, connector: Connector, out: Path, progress: ProgressSink,
                          resources: ExitStack, phase: Callable[[str], Any]) -> Federation:
    """Connect (the transport is closed when `resources` closes), calibrate, route, then wrap."""
    with phase("connect"), progress.phase("connect to the experts", 1):
        transport = resources.enter_context(closing(connector.open(prepared, out)))
    # Per-value LDP: the server counts the distinct values each client released (beside the
    # client's own count, reconciled in the report).
    transport.ledger.track_releases = PrivacyPlan.from_config(prepared.config).values is not None
    # Before calibration: its traffic is the first this session adds to the ledger (and the file).
    # A resumed run keeps only the scoring traffic before its checkpoint: it redoes what came after.
    from fedgrpo.training.trainer import checkpoint_step, last_checkpoint

    # Calibration's traffic stays only if graph.json says calibration finished (it is flushed to the
    # file just before graph.json is written: a kill in between redoes calibration, counted once).
    resume_step = checkpoint_step(last_checkpoint(out / "checkpoints"))
    ledger_file = LedgerFile(transport.ledger, out / "traffic.jsonl", resume_step=resume_step,
                             keep_calibration=(out / "graph.json").is_file())
    session = getattr(transport, "session", None)  # the scoring session: its name, numbers, texts held
    if session is not None:
        session.attach(out / "scoring-session.jsonl", resume_step)
    with phase("calibrate"):
        calibration = calibrate_and_route(prepared, transport, out, progress, before_save=ledger_file.flush)
    failover, recheck, base = None, None, transport
    if prepared.config.uses_recheck:
        transport = recheck = recheck_transport(prepared, transport, calibration, out / "recheck.jsonl")
        recheck.resume(resume_step)  # its state at the checkpoint, like the ledger's
    if prepared.config.engine.reroute_failed:
        transport = failover = FailoverTransport(transport, calibration.routing.ranking)
    return Federation(TimedTransport(transport), calibration, failover, ledger_file, base, recheck)


def recheck_transport(prepared: Prepared, transport: ExpertTransport, calibration: Calibration,
                      journal: Path) -> RecheckTransport:
    """The re-check of every expert on the probes mixed into the training questions (the server
    keeps their answers), with spot checks among the experts competent for a question (inside the
    failover, so an expert it excludes is lost and its questions re-routed), its state after every
    round in `journal`."""
    config = prepared.config
    fed = config.federation
    style = PromptStyle.from_config(config.prompts)
    probes = ProbeBook({q.question_id: q for q in mixed_probes(prepared)}, style.extract, is_correct)
    return RecheckTransport(transport, probes, threshold=fed.recheck_threshold,
                            competent=calibration.routing.competent, spot_share=fed.spot_check_share,
                            seed=config.train.train_seed,
                            keep=PrivacyPlan.from_config(config).keep_probability(),
                            correct_inverted=fed.recheck_correct_inverted, journal=journal)


def collect_metrics(prepared: Prepared, before: dict[str, DomainScore], after: dict[str, DomainScore],
                    federation: Federation | None, trained: TrainedPolicy,
                    timings: dict[str, float], wall_time_s: float,
                    validation: tuple[dict[str, DomainScore], dict[str, DomainScore]] = ({}, {}),
                    diagnostics: list[dict[str, Any]] | None = None,
                    expert_accuracy: dict[str, dict[str, Any]] | None = None) -> RunMetrics:
    """The report phase: every phase's result in one `RunMetrics`."""
    config = prepared.config
    ledger = federation.transport.ledger if federation else TrafficLedger()  # ground truth: no traffic
    failures: dict[str, int] = {}
    for f in trained.failures:
        failures[f.expert_id] = failures.get(f.expert_id, 0) + 1
    routing = federation.calibration.routing if federation else None
    failover = federation.failover if federation else None
    return RunMetrics(
        mode="ground_truth" if config.data.use_ground_truth else "experts",
        engine=config.engine.engine,
        accuracy_before=before, accuracy_after=after, reward_curve=trained.reward_curve,
        validation_before=validation[0], validation_after=validation[1],
        bytes={"totals": ledger.totals(), "wire_totals": ledger.wire_totals(), "per_expert": ledger.per_expert(),
               "per_step": ledger.per_step(), "stale_replies": ledger.stale_replies,
               "refused_replies": dict(ledger.refused), **message_shape(federation)},
        routing=({"hit_rate": routing.hit_rate, "table": routing.table(prepared.splits.pool),
                  "method": config.federation.selection} if routing else None),
        graph=federation.calibration.summary() if federation else {},
        failures=failures, failure_details=[f.__dict__ for f in trained.failures[:50]],
        lost_experts={e: f.reason for e, f in failover.lost.items()} if failover else {},
        rerouted_questions=dict(failover.rerouted) if failover else {},
        wall_time_s=round(wall_time_s, 1), step_seconds=trained.step_seconds,
        reward_wait_s=trained.reward_wait_s,
        reward_round_trips_s=list(federation.transport.rounds) if federation else [],
        overlap_rewards=trained.overlap_rewards, timings_s=timings, final_model=str(trained.final_dir),
        privacy=privacy_report(config, federation, trained.budget_spent_at, expert_accuracy) if federation else None,
        reward_fidelity=fidelity_log(federation.base) if federation else None,
        expert_checks=federation.recheck.report() if federation and federation.recheck else None,
        diagnostics=diagnostics or [],
    )


def dp_expert_accuracy(prepared: Prepared, out: Path, progress: ProgressSink) -> dict[str, dict[str, Any]]:
    """With DP-trained experts built here (expert_epsilon, embedded or in-process Simulation): each
    expert's greedy pass@1 in its own domain on the test split, with DP and trained without it (the
    non-private expert is built, cached, for this comparison only); cached in ``dp-experts.json``."""
    config = prepared.config
    if PrivacyPlan.from_config(config).experts is None or not prepared.expert_dirs:
        return {}
    cache = out / "dp-experts.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    plain = prepare(config, progress, nonprivate=True).nonprivate_dirs
    style = PromptStyle.from_config(config.prompts)
    out_scores: dict[str, dict[str, Any]] = {}
    for shard in prepared.splits.clients:
        own = {shard.main_domain: prepared.splits.eval[shard.main_domain]}
        with_dp = evaluate_greedy(prepared.expert_dirs[shard.expert_id], own, config.evaluation, style, progress,
                                  f"evaluate {shard.expert_id}'s DP expert")
        without = evaluate_greedy(plain[shard.expert_id], own, config.evaluation, style, progress,
                                  f"evaluate {shard.expert_id}'s expert without DP")
        out_scores[shard.expert_id] = {"domain": shard.main_domain,
                                       "with_dp": with_dp[shard.main_domain].pass_at_1,
                                       "without_dp": without[shard.main_domain].pass_at_1}
    write_json_atomic(cache, out_scores)
    return out_scores


def privacy_report(config: FedGRPOConfig, federation: Federation, training_stopped_at: int | None,
                   expert_accuracy: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Per client: what it declared (hello: record-level DP of its expert, label DP, per-value LDP)
    and, with per-value LDP, the distinct values it released and their epsilon, counted by the
    client (its journal, where it runs in this process) and by the server (its ledger), the larger
    reported; who stopped at its budget; the step training stopped at when every budget was spent.
    None when the config asks for no privacy and no client declares any."""
    plan = PrivacyPlan.from_config(config)
    declared = dict(federation.transport.expert_privacy)
    if plan.experts is None and not plan.on_client and not any(declared.values()):
        return None
    from fedgrpo.privacy.accounting import values_epsilon

    ledger, lost = federation.transport.ledger, dict(federation.failover.lost) if federation.failover else {}
    clients = {}
    server_counts = ledger.released()
    local = _local_client_privacy(federation.base)
    for expert_id in federation.transport.expert_ids:
        entry: dict[str, Any] = {"declared": declared.get(expert_id) or {}}
        if plan.values is not None:
            own = local[expert_id].spent() if expert_id in local else None
            by_phase = server_counts.get(expert_id, {})
            counts: dict[Any, int] = {}
            for mechanism, n in ((plan.calibration, by_phase.get("calibrate", 0)), (plan.values, by_phase.get("score", 0))):
                counts[mechanism] = counts.get(mechanism, 0) + n  # one mechanism may serve both phases
            server_eps = values_epsilon(counts, plan.delta)
            entry["values"] = {"server_count": sum(by_phase.values()), "server_epsilon": round(server_eps, 4),
                               "client_count": sum(own["released"].values()) if own else None,
                               "client_epsilon": own["epsilon"] if own else None}
            entry["values"]["epsilon"] = max(server_eps, own["epsilon"] if own else 0.0)
        clients[expert_id] = entry
    return {"plan": {"expert_epsilon": plan.experts.epsilon if plan.experts else None,
                     "label_epsilon": plan.labels.epsilon if plan.labels else None,
                     "reward_mechanism": plan.values.name if plan.values is not None else None,
                     "epsilon_per_value": plan.values.epsilon if plan.values is not None else None,
                     "delta": plan.delta, "budget": plan.budget},
            "clients": clients,
            # DP experts: each one's own-domain test accuracy with DP and without (empty otherwise).
            "expert_accuracy": expert_accuracy or {},
            "stopped_by_budget": sorted(e for e, f in lost.items() if f.kind is FailureKind.BUDGET_SPENT),
            "training_stopped_at": training_stopped_at}


def _local_client_privacy(transport: ExpertTransport) -> dict[str, Any]:
    """The clients' own privacy state where they run in this process (embedded engine), by expert id."""
    out = {}
    for expert_id, expert in (getattr(transport, "experts", None) or {}).items():
        privacy = getattr(expert, "privacy", None)
        if privacy is not None and hasattr(privacy, "spent"):
            out[expert_id] = privacy
    return out


def message_shape(federation: Federation | None) -> dict[str, Any]:
    """What the scoring messages held (`transport.session.ScoringSession.shape`: per form, items,
    distinct questions and visits, values and their bytes, texts sent; a resumed run counts from its
    restart), and the largest 8-bit quantisation error a client's reply carried where the clients
    run in this process (embedded engine; None elsewhere: each site keeps its own log)."""
    if federation is None:
        return {}
    session = getattr(federation.base, "session", None)
    endpoints = getattr(federation.base, "endpoints", None) or {}
    errors = [e.quantisation_error for e in endpoints.values() if hasattr(e, "quantisation_error")]
    return {"scoring_shape": session.shape() if session is not None else None,
            "quantisation_error": max(errors) if errors else None}


def fidelity_log(transport: ExpertTransport) -> list[dict[str, Any]] | None:
    """Per step, the mean over clients of their logged sign fidelity; None where the clients are not
    in this process (Flower engines: each site keeps its own log) or keep none (local DP off)."""
    experts = getattr(transport, "experts", None)
    if not experts:
        return None
    by_step: dict[int, list[float]] = {}
    for expert in experts.values():
        for step, share in getattr(expert, "fidelity", []):
            by_step.setdefault(step, []).append(share)
    return [{"step": s, "share": round(sum(v) / len(v), 4)} for s, v in sorted(by_step.items())] or None


def _nothing() -> None:
    pass


def _phase_clock(timings: dict[str, float]) -> Callable[[str], Any]:
    """`with phase(name):` adds the block's wall seconds to ``timings[name]``."""

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - started, 1)

    return phase
