"""Experts built from the config, the same way on every engine.

`make_local_expert` is the one place that turns a config into an expert's scorer and privacy
settings (its client state, label DP, the per-value wrapper outermost, at the client boundary). The
embedded engine builds one per client from the prepared federation (`embedded_transport`); a
simulated SuperNode and a site's expert service build theirs with `build_site_expert`, by default
from the config's shard (each site regenerates its own), or from the site's own data file and
expert model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.partition import build_splits
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.errors import ConfigError
from fedgrpo.models.load import read_guarantee
from fedgrpo.privacy.client import PrivateExpert
from fedgrpo.privacy.plan import PrivacyPlan
from fedgrpo.scorers.adversary import AdversarialExpert
from fedgrpo.scorers.expert import LocalExpert
from fedgrpo.training.prepare import Prepared, prepare_expert, prepare_site_expert
from fedgrpo.transport.base import Expert, ExpertTransport
from fedgrpo.transport.embedded import EmbeddedTransport


def make_local_expert(config: FedGRPOConfig, expert_id: str, private_data: Sequence[Question], model_dir: Path,
                      domain: str | None = None, *, state_dir: Path | None = None,
                      guarantee: dict[str, Any] | None = None) -> Expert:
    """An in-process expert with the config's scorer and privacy settings, wherever it runs (a
    dishonest one where the config's `adversaries` name it: measurements only).

    `state_dir` is the client's own directory (its secret and release journal), needed when the
    config's privacy plan keeps client state (label DP, per-value LDP); `guarantee` overrides the
    record-level guarantee read from the model directory (a site declaring its own model's)."""
    fed, plan = config.federation, PrivacyPlan.from_config(config)
    client_privacy = None
    if plan.on_client:
        if state_dir is None:
            raise ConfigError(f"{expert_id}: label_epsilon and reward_epsilon keep a client secret and journal; "
                              "give the client a state directory")
        client_privacy = plan.client(state_dir)
    expert: Expert = LocalExpert(
        expert_id, private_data, model_dir, domain=domain, mode=fed.scorer_mode,
        style=PromptStyle.from_config(config.prompts),
        expert_samples=fed.expert_samples, max_new_tokens=config.evaluation.max_new_tokens,
        batch_size=config.evaluation.eval_batch_size, seed=config.train.train_seed,
        labels=client_privacy if plan.labels is not None else None,
        guarantee=guarantee if guarantee is not None else read_guarantee(model_dir),
    )
    behaviour = fed.adversary_of(expert_id)
    if behaviour:
        expert = AdversarialExpert(expert, behaviour, seed=config.train.train_seed)
    if client_privacy is not None and plan.values is not None:
        expert = PrivateExpert(expert, client_privacy)  # the client boundary: outermost
    return expert


def site_state_dir(config: FedGRPOConfig, expert_id: str) -> Path:
    """A simulated site's own state directory: under the run's output directory (each site of a real
    deployment names its own, `fedgrpo expert serve --state-dir`)."""
    root = Path(config.output.output_dir).expanduser() if config.output.output_dir else Path("runs/sites")
    return root / "clients" / expert_id


def build_site_expert(config: FedGRPOConfig, expert_id: str, *, data_path: str | None = None,
                      model_dir: str | None = None, domain: str | None = None, state_dir: Path | None = None,
                      guarantee: dict[str, Any] | None = None) -> Expert:
    """A site's expert. Without `data_path` and `model_dir`, the config's shard for `expert_id`
    and its cached expert model (the same one `prepare` builds). A real site brings its own:
    `data_path` (its questions with trusted answers, any format of `fedgrpo.data.files`) and/or `model_dir` (its
    expert model, a local Hugging Face directory); given data but no model, the expert is the
    config's base fine-tuned on that data (cached like every model, with DP-SGD under the config's
    expert_epsilon). `state_dir` is the site's own (default: `site_state_dir`); `guarantee` is what
    a site declares of its own model (default: what the model directory records, else none)."""
    if data_path is None and model_dir is None:
        shard, resolved_model = prepare_expert(config, expert_id)
        questions, site_domain = shard.questions, shard.main_domain
        if config.data.pool_answers_at_clients:
            questions = build_splits(config.data).scoring_store(shard, True)
    else:
        questions, site_domain, resolved_model = prepare_site_expert(
            config, expert_id, data_path=data_path, model_dir=model_dir, domain=domain)
    return make_local_expert(config, expert_id, questions, resolved_model, domain or site_domain,
                             state_dir=state_dir or site_state_dir(config, expert_id), guarantee=guarantee)


def embedded_transport(prepared: Prepared, out: Path) -> ExpertTransport:
    """The embedded engine: every client's expert in this process, called through a thread pool;
    each client's state (its secret, its journal, the question texts it was sent) in
    ``out/clients/<expert id>``."""
    config = prepared.config
    splits, answers = prepared.splits, config.data.pool_answers_at_clients
    experts = {s.expert_id: make_local_expert(config, s.expert_id, splits.scoring_store(s, answers),
                                              prepared.expert_dirs[s.expert_id],
                                              state_dir=out / "clients" / s.expert_id)
               for s in splits.clients}
    return EmbeddedTransport(experts, timeout_s=config.federation.expert_timeout_s,
                             style=PromptStyle.from_config(config.prompts),
                             stores={s.expert_id: out / "clients" / s.expert_id / "texts" for s in splits.clients})
