"""`prepare`: splits, the server base model and one expert per client, all cached; then a report of
how good each model is on every domain.

The report checks the default recipe's promises: the server is weak enough to leave room to learn,
strong enough that GRPO gets a signal (sampled answers to a training question disagree), and every
expert is clearly better than the server in its own domain.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.partition import ClientShard, Splits, build_splits
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError
from fedgrpo.models.load import base_model_dir, expert_model_dir, load_model, read_guarantee
from fedgrpo.privacy.plan import ExpertDP, PrivacyPlan
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.training.diagnose import prepare_findings
from fedgrpo.training.evaluate import DomainScore, evaluate_model, score_questions

SIGNAL_PROBE_SIZE = 400  # training-pool questions sampled to measure the GRPO signal


@dataclass(frozen=True)
class Prepared:
    config: FedGRPOConfig
    splits: Splits
    server_dir: Path
    expert_dirs: dict[str, Path]  # expert_id -> model directory
    cache_hits: dict[str, bool] = field(default_factory=dict)  # "server" / expert_id -> was cached
    # With DP-trained experts (expert_epsilon): expert_id -> the expert without DP, for the report's
    # side-by-side accuracy (built only when asked: `prepare(..., nonprivate=True)`).
    nonprivate_dirs: dict[str, Path] = field(default_factory=dict)


def prepare(config: FedGRPOConfig, progress: ProgressSink = NullProgress(), *,
            experts: bool = True, nonprivate: bool = False) -> Prepared:
    """Build (or fetch from the cache) everything a run needs. Idempotent and resumable: each model
    is published to the cache as soon as it is trained, so an interrupted prepare resumes there.

    `experts=False` is the server's share of a deployment: the experts live on their sites
    (`prepare_expert`), so `expert_dirs` stays empty. With DP-trained experts the target is checked
    against every client's data before any training; `nonprivate=True` also builds each expert
    without DP (the report's comparison)."""
    splits = build_splits(config.data)
    plan = PrivacyPlan.from_config(config)
    if plan.experts is not None and experts:
        for shard in splits.clients:
            plan.experts.check(len(shard.questions), shard.expert_id)
    models = config.models
    server_dir, server_hit = base_model_dir(models.server_model, splits.public, models, progress)
    expert_dirs: dict[str, Path] = {}
    hits = {"server": server_hit}
    if experts:
        expert_base = _expert_base(config, splits, server_dir, progress)
        for index, shard in enumerate(splits.clients):
            expert_dirs[shard.expert_id], hits[shard.expert_id] = _expert_dir(
                config, splits, expert_base, shard.expert_id, shard.questions, index, progress, plan.experts)
    nonprivate_dirs: dict[str, Path] = {}
    if nonprivate and experts and plan.experts is not None:
        for index, shard in enumerate(splits.clients):
            nonprivate_dirs[shard.expert_id], _ = _expert_dir(
                config, splits, expert_base, shard.expert_id, shard.questions, index, progress, None)
    return Prepared(config, splits, server_dir, expert_dirs, hits, nonprivate_dirs)


def _expert_dir(config: FedGRPOConfig, splits: Splits, expert_base: Path, expert_id: str,
                questions: Sequence[Question], index: int, progress: ProgressSink,
                dp: ExpertDP | None) -> tuple[Path, bool]:
    """The expert fine-tuned from `expert_base` on `questions` (with the config's public replay), its
    seed derived from the client's `index`, with DP-SGD to `dp`'s target when given: the one recipe
    behind `prepare` and `prepare_expert`."""
    models = config.models
    seed = models.model_seed + 1 + index
    return expert_model_dir(expert_base, expert_id,
                            expert_training_items(questions, splits.public, models.expert_replay, seed),
                            seed, models, PromptStyle.from_config(config.prompts), progress, dp=dp)


def _expert_base(config: FedGRPOConfig, splits: Splits, server_dir: Path | None,
                 progress: ProgressSink) -> Path:
    models = config.models
    if models.expert_model == models.server_model and server_dir is not None:
        return server_dir
    return base_model_dir(models.expert_model, splits.public, models, progress)[0]


def prepare_expert(config: FedGRPOConfig, expert_id: str,
                   progress: ProgressSink = NullProgress()) -> tuple[ClientShard, Path]:
    """One site's share of `prepare`: its private shard and its expert model (the same cached model
    `prepare` builds for it)."""
    splits = build_splits(config.data)
    shard, index = _config_shard(splits, expert_id)
    dp = PrivacyPlan.from_config(config).experts
    if dp is not None:
        dp.check(len(shard.questions), expert_id)
    expert_base = _expert_base(config, splits, None, progress)
    model_dir, _ = _expert_dir(config, splits, expert_base, expert_id, shard.questions, index, progress, dp)
    return shard, model_dir


def prepare_site_expert(config: FedGRPOConfig, expert_id: str, *, data_path: str | None,
                        model_dir: str | None, domain: str | None,
                        progress: ProgressSink = NullProgress()) -> tuple[tuple[Question, ...], str, Path]:
    """A site that brings its own data and/or expert model: (private questions, domain, model dir).

    Without `data_path` the private questions are the config's shard for `expert_id`; without
    `model_dir` the expert is the config's base fine-tuned on the site's questions."""
    if data_path is not None:
        from fedgrpo.data.files import Columns, load_questions

        questions = tuple(load_questions(data_path, Columns.from_config(config.data), role="private data",
                                         need_answer=True, default_domain=domain))
        site_domain = Counter(q.domain for q in questions).most_common(1)[0][0]
    else:
        shard, _ = _config_shard(build_splits(config.data), expert_id)
        questions, site_domain = shard.questions, shard.main_domain
    if model_dir is not None:
        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"expert model {model_dir!r} is not a Hugging Face model directory (no "
                              "config.json); give the directory your expert was saved to")
        return questions, site_domain, path
    splits = build_splits(config.data)
    dp = PrivacyPlan.from_config(config).experts
    if dp is not None:  # a site trains its own DP expert on its own data
        dp.check(len(questions), expert_id)
    base = _expert_base(config, splits, None, progress)
    seed = config.models.model_seed + 1 + _site_seed_offset(expert_id)
    path, _ = expert_model_dir(base, expert_id, questions, seed, config.models,
                               PromptStyle.from_config(config.prompts), progress, dp=dp)
    return questions, site_domain, path


def expert_training_items(shard: Sequence[Question], public: Sequence[Question], replay: float,
                          seed: int) -> tuple[Question, ...]:
    """An expert's fine-tuning data: its private shard and, with `replay` r > 0, public items (every
    domain's, drawn with `seed`) making up a share r of it, so that fine-tuning does not wipe out what
    the base knew of the other domains."""
    if replay <= 0 or not public:
        return tuple(shard)
    n = min(len(public), round(len(shard) * replay / (1 - replay)))
    return tuple(shard) + tuple(random.Random(seed).sample(list(public), n))


def _config_shard(splits: Splits, expert_id: str) -> tuple[ClientShard, int]:
    ids = [s.expert_id for s in splits.clients]
    if expert_id not in ids:
        raise ConfigError(f"no client {expert_id!r} in this config; use one of {', '.join(ids)}")
    index = ids.index(expert_id)
    return splits.clients[index], index


def _site_seed_offset(expert_id: str) -> int:
    """A stable per-site seed offset for an id that need not be one of the config's clients."""
    return int(hashlib.sha1(expert_id.encode("utf-8")).hexdigest()[:6], 16)


@dataclass(frozen=True)
class PrepareReport:
    server: dict[str, DomainScore]
    experts: dict[str, dict[str, DomainScore]]  # expert_id -> domain -> greedy scores
    expert_domains: dict[str, str]  # expert_id -> the domain it holds most of
    signal_share: float  # share of probed training questions with mixed sampled correctness
    signal_probe: int
    seconds: dict[str, float]
    cache_hits: dict[str, bool]
    # DP-trained experts: expert_id -> its record-level guarantee (what its model directory records)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    # and expert_id -> the same expert trained without DP, greedy scores in its own domain
    nonprivate: dict[str, dict[str, DomainScore]] = field(default_factory=dict)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # training.diagnose's findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "privacy": self.privacy,
            "nonprivate": {e: {d: s.to_dict() for d, s in by.items()} for e, by in self.nonprivate.items()},
            "server": {d: s.to_dict() for d, s in self.server.items()},
            "experts": {e: {d: s.to_dict() for d, s in by.items()} for e, by in self.experts.items()},
            "expert_domains": self.expert_domains,
            "signal_share": self.signal_share,
            "signal_probe": self.signal_probe,
            "seconds": self.seconds,
            "cache_hits": self.cache_hits,
            "diagnostics": self.diagnostics,
        }

    def experts_beat_server(self) -> dict[str, bool]:
        """Per expert whose domain has an evaluation set (all, with generated data): is it better
        than the server there?"""
        return {
            e: self.experts[e][d].pass_at_1 > self.server[d].pass_at_1
            for e, d in self.expert_domains.items() if d in self.server
        }


def report_prepared(
    prepared: Prepared, progress: ProgressSink = NullProgress(), prepare_seconds: float = 0.0
) -> PrepareReport:
    """Evaluate the server (greedy and sampled) and every expert (greedy) on every domain, and
    measure the GRPO signal on a sample of the server's training pool (gold answers used only here,
    as a diagnostic)."""
    ev = prepared.config.evaluation
    splits = prepared.splits
    started = time.perf_counter()
    common = {"max_new_tokens": ev.max_new_tokens, "batch_size": ev.eval_batch_size,
              "seed": prepared.config.data.data_seed, "style": PromptStyle.from_config(prepared.config.prompts)}
    n_eval = sum(len(v) for v in splits.eval.values())

    server, tokenizer = load_model(prepared.server_dir)
    with progress.phase("evaluate server", n_eval * (2 if ev.eval_samples else 1)) as advance:
        server_scores = evaluate_model(
            server, tokenizer, splits.eval, samples=ev.eval_samples, temperature=ev.eval_temperature,
            on_batch=advance, **common,
        )
    probe = list(splits.pool[:SIGNAL_PROBE_SIZE])
    with progress.phase("measure GRPO signal on the training pool", 2 * len(probe)) as advance:
        signal = score_questions(
            server, tokenizer, probe, samples=8, temperature=1.0, on_batch=advance, **common
        )
    expert_scores: dict[str, dict[str, DomainScore]] = {}
    for expert_id, path in prepared.expert_dirs.items():
        model, tok = load_model(path)
        with progress.phase(f"evaluate {expert_id}", n_eval) as advance:
            expert_scores[expert_id] = evaluate_model(
                model, tok, splits.eval, samples=0, temperature=ev.eval_temperature, on_batch=advance,
                **common,
            )
    privacy = {e: g for e, path in prepared.expert_dirs.items() if (g := read_guarantee(path)) is not None}
    nonprivate: dict[str, dict[str, DomainScore]] = {}
    domains = {s.expert_id: s.main_domain for s in splits.clients}
    for expert_id, path in prepared.nonprivate_dirs.items():
        own = {d: qs for d, qs in splits.eval.items() if d == domains[expert_id]}
        model, tok = load_model(path)
        with progress.phase(f"evaluate {expert_id} without DP", sum(len(v) for v in own.values())) as advance:
            nonprivate[expert_id] = evaluate_model(model, tok, own, samples=0, temperature=ev.eval_temperature,
                                                   on_batch=advance, **common)
    return PrepareReport(
        privacy=privacy, nonprivate=nonprivate,
        server=server_scores,
        experts=expert_scores,
        expert_domains={s.expert_id: s.main_domain for s in splits.clients},
        signal_share=signal.mixed_share or 0.0,
        signal_probe=len(probe),
        seconds={"prepare": round(prepare_seconds, 1), "evaluate": round(time.perf_counter() - started, 1)},
        cache_hits=prepared.cache_hits,
        diagnostics=[f.to_dict() for f in prepare_findings(prepared, server_scores, expert_scores)],
    )
