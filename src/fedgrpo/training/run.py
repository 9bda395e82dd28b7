"""`fedgrpo run`: prepare (cached) -> calibrate -> route -> GRPO train -> evaluate, resumable.

Everything a run produces lives in its output directory. A rerun with the same output directory
resumes: finished phases are read back (base accuracy, graph, routing) and GRPO continues from its
last checkpoint, with the traffic ledger restored from `traffic.jsonl`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedgrpo.config import FedGRPOConfig
from fedgrpo.core.graph import ConfidenceGraph
from fedgrpo.data.gym import is_correct
from fedgrpo.data.prompts import extract_answer
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError
from fedgrpo.models.embed import embed_questions
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.scorers.expert import ExpertClient
from fedgrpo.training.calibrate import Routing, calibrate, route
from fedgrpo.training.evaluate import DomainScore, evaluate_model
from fedgrpo.training.prepare import Prepared, prepare
from fedgrpo.training.reward import FederatedReward
from fedgrpo.transport.base import ExpertTransport, TrafficLedger
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.transport.failover import FailoverTransport


def parse_grpo_args(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings -> GRPOConfig extras; values parsed as YAML scalars (true, 0.5, text)."""
    extra = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            extra[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"grpo_args {pair!r}: the value is not a valid scalar") from None
    return extra


def grpo_settings(config: FedGRPOConfig) -> Any:
    from fedgrpo.training.trainer import GRPOSettings

    t, f = config.train, config.federation
    return GRPOSettings(
        num_generations=f.experts_per_question * f.generations_per_expert,
        prompts_per_step=t.prompts_per_step,
        max_steps=t.train_steps,
        learning_rate=t.learning_rate,
        temperature=t.temperature,
        max_completion_length=t.max_completion_length,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        beta=t.beta,
        seed=t.train_seed,
        save_steps=t.save_steps,
        steps_per_generation=t.steps_per_generation,
        overlap_rewards=t.overlap_rewards,
        extra=parse_grpo_args(t.grpo_args),
    )


@dataclass(frozen=True)
class RunResult:
    metrics: dict[str, Any]
    output_dir: Path


def _evaluate_greedy(model_dir: Path, prepared: Prepared, on_batch: Any = None) -> dict[str, DomainScore]:
    from fedgrpo.models.load import load_model

    ev = prepared.config.evaluation
    model, tokenizer = load_model(model_dir)
    return evaluate_model(model, tokenizer, prepared.splits.eval, samples=0, temperature=1.0,
                          max_new_tokens=ev.max_new_tokens, batch_size=ev.eval_batch_size, seed=0,
                          on_batch=on_batch)


def _cached_json(path: Path, compute: Any) -> Any:
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)
    return value


def make_expert_client(config: FedGRPOConfig, expert_id: str, private_data: Sequence[Question],
                       model_dir: Path) -> ExpertClient:
    """A client as every engine builds it: the same scorer settings wherever it runs."""
    fed = config.federation
    return ExpertClient(
        expert_id, private_data, model_dir, mode=fed.scorer_mode, expert_samples=fed.expert_samples,
        max_new_tokens=config.evaluation.max_new_tokens, batch_size=config.evaluation.eval_batch_size,
        seed=config.train.train_seed,
    )


# (prepared federation, expert ids in client order) -> the transport a run talks through.
TransportFactory = Callable[[Prepared, Sequence[str]], ExpertTransport]


def embedded_transport(prepared: Prepared, expert_ids: Sequence[str]) -> ExpertTransport:
    config, splits = prepared.config, prepared.splits
    clients = {
        s.expert_id: make_expert_client(config, s.expert_id, s.questions, prepared.expert_dirs[s.expert_id])
        for s in splits.clients
    }
    return EmbeddedTransport(clients, timeout_s=config.federation.expert_timeout_s,
                             domains={s.expert_id: s.main_domain for s in splits.clients})


def run(config: FedGRPOConfig, out: Path, progress: ProgressSink = NullProgress(), *,
        transport_factory: TransportFactory = embedded_transport, prepare_experts: bool = True) -> RunResult:
    """The whole pipeline on any engine: `transport_factory` decides how requests reach the experts
    (in-process by default; a Flower grid in the ServerApp). `prepare_experts=False` leaves the
    experts to their sites (deployment)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    t0 = time.perf_counter()
    prepared = prepare(config, progress, experts=prepare_experts)
    splits = prepared.splits
    fed, train = config.federation, config.train
    use_gt = config.data.use_ground_truth
    train_questions = splits.server_training_pool(use_gt)
    # What the reward hook may read: gold answers only in ground-truth mode, so an expert-reward run
    # provably trains without them (train_questions has answer=None then).
    question_index = {q.question_id: q for q in train_questions}
    t0 = mark("prepare", t0)

    n_eval = sum(len(v) for v in splits.eval.values())
    with progress.phase("evaluate the base server (greedy)", n_eval) as advance:
        before = _cached_json(out / "before.json", lambda: {
            d: s.to_dict() for d, s in _evaluate_greedy(prepared.server_dir, prepared, advance).items()})
    t0 = mark("evaluate_before", t0)

    if use_gt:
        transport: ExpertTransport = EmbeddedTransport({})  # ground truth asks no expert
    else:
        with progress.phase("connect to the experts", 1):
            transport = transport_factory(prepared, [s.expert_id for s in splits.clients])
    # The domain each expert declares (hello, on Flower); the split's own view as a fallback.
    expert_domains = {s.expert_id: transport.expert_domains.get(s.expert_id, s.main_domain)
                      for s in splits.clients}
    ledger_file = _LedgerFile(transport.ledger, out / "traffic.jsonl")

    routing: Routing | None = None
    graph_summary: dict[str, Any] = {}
    failover: FailoverTransport | None = None
    if not use_gt:
        with progress.phase("calibrate experts on the auxiliary set", len(splits.clients)):
            graph, routing, cal_failures = _calibrate_and_route(config, prepared, transport, out, expert_domains)
        graph_summary = {"per_domain": graph.per_domain(), "overall": dict(zip(graph.expert_ids, graph.overall().tolist())),
                         "calibration_failures": cal_failures}
        if config.engine.reroute_failed:
            transport = failover = FailoverTransport(transport, routing.ranking)
        t0 = mark("calibrate", t0)

    from fedgrpo.training.trainer import build_grpo_trainer, group_by_question, train_grpo

    settings = grpo_settings(config)
    timed = _TimedTransport(transport)
    reward = FederatedReward(
        question_index, routing.experts if routing else None, None if use_gt else timed,
        group_size=settings.num_generations, generations_per_expert=fed.generations_per_expert,
        accuracy_weight=train.accuracy_weight, format_weight=train.format_weight,
        group_by_question=group_by_question,
        gold_scorer=(lambda q, c: 1.0 if is_correct(q, extract_answer(c)) else 0.0) if use_gt else None,
        deferred=settings.overlap_rewards,
    )
    trainer = build_grpo_trainer(prepared.server_dir, train_questions, reward, settings, out / "checkpoints")
    with progress.phase(f"GRPO training ({train.train_steps} steps)", train.train_steps) as advance:
        from transformers import TrainerCallback

        step_ends: list[float] = [time.perf_counter()]

        class _Progress(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                advance(1)
                ledger_file.flush()
                step_ends.append(time.perf_counter())

        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        # Our progress bar replaces TRL's tqdm bar and its printed log dicts; the logs stay in
        # trainer.state.log_history (and every checkpoint).
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_Progress())
        try:
            train_grpo(trainer, resume=True)
        finally:
            reward.close()  # overlap_rewards' background sender; nothing is in flight after the last step
    final_dir = out / "final-model"
    trainer.save_model(str(final_dir))
    trainer.processing_class.save_pretrained(str(final_dir))
    ledger_file.flush()
    transport.close()
    t0 = mark("train", t0)

    with progress.phase("evaluate the trained server (greedy)", n_eval) as advance:
        after = {d: s.to_dict() for d, s in _evaluate_greedy(final_dir, prepared, advance).items()}
    mark("evaluate_after", t0)

    history = [h for h in trainer.state.log_history if "reward" in h or any(k.startswith("rewards/") for k in h)]
    mean_before = sum(s["pass_at_1"] for s in before.values()) / len(before)
    mean_after = sum(s["pass_at_1"] for s in after.values()) / len(after)
    failures: dict[str, int] = {}
    for f in reward.log.failures:
        failures[f.expert_id] = failures.get(f.expert_id, 0) + 1
    metrics = {
        "mode": "ground_truth" if use_gt else "experts",
        "accuracy_before": before,
        "accuracy_after": after,
        "mean_before": mean_before,
        "mean_after": mean_after,
        "gain_points": round(100 * (mean_after - mean_before), 2),
        "reward_curve": [{"step": h.get("step"), "reward": h.get("reward"), "reward_std": h.get("reward_std")}
                         for h in history],
        "bytes": {
            "totals": transport.ledger.totals(),
            "per_expert": transport.ledger.per_expert(),
            "per_step": transport.ledger.per_step(),
            "stale_replies": transport.ledger.stale_replies,
        },
        "routing": ({"hit_rate": routing.hit_rate, "table": routing.table(splits.pool),
                     "method": fed.selection} if routing else None),
        "graph": graph_summary,
        "failures": failures,
        # Experts lost during training and how many of their questions went to the next-best expert.
        "lost_experts": dict(failover.lost) if failover else {},
        "rerouted_questions": dict(failover.rerouted) if failover else {},
        "engine": config.engine.engine,
        "failure_details": [f.__dict__ for f in reward.log.failures[:50]],
        "wall_time_s": round(time.perf_counter() - started, 1),
        # Seconds per optimizer step of this session (the first one includes TRL's warm-up), the
        # seconds training waited for expert rewards, and the seconds the transport round trips took
        # (scoring included). They are equal unless overlap_rewards hides round trips behind training.
        "step_seconds": [round(b - a, 4) for a, b in zip(step_ends, step_ends[1:])],
        "reward_wait_s": round(reward.wait_seconds if settings.overlap_rewards else timed.seconds, 4),
        "reward_round_trip_s": round(timed.seconds, 4),
        "reward_round_trips_s": [round(x, 4) for x in timed.rounds],
        "overlap_rewards": settings.overlap_rewards,
        "timings_s": timings,
        "final_model": str(final_dir),
    }
    return RunResult(metrics, out)


def _calibrate_and_route(config: FedGRPOConfig, prepared: Prepared, transport: ExpertTransport,
                         out: Path, expert_domains: dict[str, str]) -> tuple[ConfidenceGraph, Routing, dict[str, str]]:
    fed = config.federation
    splits = prepared.splits
    graph_path = out / "graph.json"
    pool_texts = [q.question for q in splits.pool]
    pool_z = embed_questions(pool_texts, fed.encoder, prepared.server_dir)
    if graph_path.is_file():
        graph, failures = ConfidenceGraph.load(graph_path), {}
    else:
        aux_z = embed_questions([q.question for q in splits.aux], fed.encoder, prepared.server_dir)
        graph, failures = calibrate(transport, splits.aux, aux_z)
        graph.save(graph_path)
    routing = route(list(splits.pool), pool_z, graph, experts_per_question=fed.experts_per_question,
                    neighbours=fed.neighbours, method=fed.selection, expert_domains=expert_domains,
                    seed=fed.selection_seed)
    (out / "routing.json").write_text(json.dumps(
        {"hit_rate": routing.hit_rate, "table": routing.table(splits.pool), "experts": routing.experts}, indent=1))
    return graph, routing, failures


class _TimedTransport:
    """Counts the seconds spent waiting in `score` (what a step waits for its rewards)."""

    def __init__(self, inner: ExpertTransport) -> None:
        self.inner = inner
        self.expert_ids, self.expert_domains, self.ledger = inner.expert_ids, inner.expert_domains, inner.ledger
        self.rounds: list[float] = []  # wall seconds of each scoring round, in order

    def calibrate(self, request: Any) -> Any:
        return self.inner.calibrate(request)

    def score(self, step: int, requests: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.score(step, requests)
        finally:
            self.rounds.append(time.perf_counter() - started)

    @property
    def seconds(self) -> float:
        return sum(self.rounds)

    def close(self) -> None:
        self.inner.close()


class _LedgerFile:
    """Mirror of the traffic ledger in `traffic.jsonl`, appended after every step (only new records:
    rewriting the whole file each step would grow quadratically) and read back on resume."""

    def __init__(self, ledger: TrafficLedger, path: Path) -> None:
        self.ledger, self.path = ledger, path
        if path.is_file():
            ledger.records.extend(tuple(json.loads(line)) for line in path.read_text().splitlines() if line)
        self.written = len(ledger.records)

    def flush(self) -> None:
        new = self.ledger.records[self.written:]
        if new:
            with self.path.open("a") as fh:
                fh.writelines(json.dumps(record) + "\n" for record in new)
            self.written += len(new)
