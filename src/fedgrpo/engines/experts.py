"""Experts built from the config, the same way on every engine.

`make_local_expert` is the one place that turns a config into an expert's scorer settings. The
embedded engine builds one per client from the prepared federation (`embedded_transport`); a
simulated SuperNode and a site's expert service build theirs with `build_site_expert`, by default
from the config's shard (each site regenerates its own), or from the site's own data file and
expert model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgrpo.config import FedGRPOConfig
from fedgrpo.core.privacy import LocalPrivacy, max_releases
from fedgrpo.data.partition import build_splits
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.scorers.adversary import AdversarialExpert
from fedgrpo.scorers.expert import LocalExpert
from fedgrpo.training.prepare import Prepared, prepare_expert, prepare_site_expert
from fedgrpo.transport.base import Expert, ExpertTransport
from fedgrpo.transport.embedded import EmbeddedTransport


def make_local_expert(config: FedGRPOConfig, expert_id: str, private_data: Sequence[Question], model_dir: Path,
                      domain: str | None = None) -> Expert:
    """An in-process expert with the config's scorer settings, wherever it runs (a dishonest one
    where the config's `adversaries` name it: measurements only)."""
    fed = config.federation
    expert = LocalExpert(
        expert_id, private_data, model_dir, domain=domain, mode=fed.scorer_mode,
        style=PromptStyle.from_config(config.prompts),
        expert_samples=fed.expert_samples, max_new_tokens=config.evaluation.max_new_tokens,
        batch_size=config.evaluation.eval_batch_size, seed=config.train.train_seed,
        privacy=local_privacy(config),
    )
    behaviour = fed.adversary_of(expert_id)
    return AdversarialExpert(expert, behaviour, seed=config.train.train_seed) if behaviour else expert


def local_privacy(config: FedGRPOConfig) -> LocalPrivacy | None:
    """A client's local DP from the config's ``privacy`` section (None: off). Its budget becomes a
    number of values: every value it sends, calibration included, counts as one release of the
    reward mechanism at reward_epsilon."""
    p = config.privacy
    if p.reward_epsilon is None:
        return None
    limit = None if p.privacy_budget is None else max_releases(
        p.privacy_budget, p.reward_epsilon, p.privacy_delta, p.reward_mechanism)
    return LocalPrivacy(p.reward_mechanism, p.reward_epsilon, limit, config.train.train_seed)


def build_site_expert(config: FedGRPOConfig, expert_id: str, *, data_path: str | None = None,
                      model_dir: str | None = None, domain: str | None = None) -> Expert:
    """A site's expert. Without `data_path` and `model_dir`, the config's shard for `expert_id`
    and its cached expert model (the same one `prepare` builds). A real site brings its own:
    `data_path` (its questions with trusted answers, any format of `fedgrpo.data.files`) and/or `model_dir` (its
    expert model, a local Hugging Face directory); given data but no model, the expert is the
    config's base fine-tuned on that data (cached like every model)."""
    if data_path is None and model_dir is None:
        shard, resolved_model = prepare_expert(config, expert_id)
        questions, site_domain = shard.questions, shard.main_domain
        if config.data.pool_answers_at_clients:
            questions = build_splits(config.data).scoring_store(shard, True)
    else:
        questions, site_domain, resolved_model = prepare_site_expert(
            config, expert_id, data_path=data_path, model_dir=model_dir, domain=domain)
    return make_local_expert(config, expert_id, questions, resolved_model, domain or site_domain)


def embedded_transport(prepared: Prepared) -> ExpertTransport:
    """The embedded engine: every client's expert in this process, called through a thread pool."""
    config = prepared.config
    splits, answers = prepared.splits, config.data.pool_answers_at_clients
    experts = {s.expert_id: make_local_expert(config, s.expert_id, splits.scoring_store(s, answers),
                                              prepared.expert_dirs[s.expert_id])
               for s in splits.clients}
    return EmbeddedTransport(experts, timeout_s=config.federation.expert_timeout_s)
