"""The one typed configuration tree, checked once.

Every field has a unique flat name, so it maps 1:1 to a YAML/TOML key, a ``--kebab-case`` CLI flag and
(later) a Flower run-config key. Precedence: CLI flags > config file > defaults. Checks run in
``__post_init__`` and raise :class:`ConfigError` with a message that names the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedgrpo.errors import ConfigError

DEFAULT_DOMAINS = ("arithmetic", "algebra", "spelling", "products")
TINY_PREFIX = "tiny:"
TINY_PRESETS = ("small", "micro")  # architectures live in fedgrpo.models.tiny
PARTITIONS = ("domain", "dirichlet", "iid")


def _is_share(text: str) -> bool:
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field: its default, its one help text, and for a closed set of names their list."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class DataConfig:
    domains: tuple[str, ...] = _f(
        DEFAULT_DOMAINS,
        "Domains, one reasoning-gym generator family each (see `fedgrpo domains`), or rg:<generator>.",
    )
    difficulty: int = _f(0, "Difficulty level of every domain's generators (0 = tiny-model friendly).")
    data_seed: int = _f(0, "Seed of every split; the same seed gives the same questions in every role.")
    num_clients: int | None = _f(None, "Number of clients (experts); unset = one per domain.")
    partition: str = _f("domain", "How client data is split: domain (one domain each), dirichlet or iid.")
    dirichlet_beta: float = _f(0.1, "Concentration beta of the dirichlet partition (paper: 0.1).")
    pool_size: int = _f(2000, "Server training pool D_s, questions in total (paper: 2000).")
    aux_size: int = _f(100, "Labelled auxiliary set D_p, items in total (paper: 100).")
    public_size: int = _f(4000, "Labelled public items per domain for the server model's pre-training.")
    eval_size: int = _f(
        600, "Held-out test items per domain (at 600 the binomial standard error of a domain-mean accuracy is near one "
        "point); tables report these.")
    val_size: int = _f(
        600, "Validation items per domain, disjoint from every other split: every choice (a recipe, a threshold, a "
        "baseline's knobs, early stopping) is made on these, never on the test items. 0 = none.")
    client_size: int = _f(1000, "Private items per client.")
    probe_size: int = _f(
        64, "Labelled probe items per domain for the re-check (probe_share), cut from the same shuffled items as "
        "every split but after all of them (no other split moves) and disjoint from each: never in the auxiliary "
        "set or the public pool, so no expert has seen one. Mixing probe_share needs ceil(share x pool items of "
        "a domain / (1 - share)) of them: 27 at 0.05 with the default pool. 0 = none.")
    use_ground_truth: bool = _f(
        False, "Give the server the pool's gold answers (off: answers withheld, the paper's Table 2)."
    )
    pool_answers_at_clients: bool = _f(
        False, "The paper's Table 1 setting: every client also holds the training pool's questions of its main "
        "domain with their answers (for scoring only: answer-based rewards where it holds the question; "
        "its expert model is unchanged). The server still sees no answer.")
    pool_file: str | None = _f(
        None, "Your own data instead of the generators: the server's training questions (answers optional, "
        "withheld unless use_ground_truth). Needs aux_file, eval_files and client data; .jsonl, .json, .csv, "
        ".parquet or a datasets save_to_disk folder (README, Your own model and data).")
    aux_file: str | None = _f(None, "Your own data: the labelled auxiliary set D_p (calibration).")
    eval_files: tuple[str, ...] = _f(
        (), "Your own data: evaluation sets as NAME=PATH (or PATH: named after the file), each reported apart.")
    val_files: tuple[str, ...] = _f(
        (), "Your own data: validation sets as NAME=PATH (one per evaluation set, same names), where choices are made.")
    val_fraction: float = _f(
        0.0, "Your own data without val_files: the share of each evaluation file held out as its validation set "
        "(a seeded draw; the rest stays the test set). 0 = no validation split.")
    probe_file: str | None = _f(
        None, "Your own data: labelled probe questions for the re-check (probe_share), drawn like the training "
        "pool's and never shown to an expert in any other role (not in the auxiliary set).")
    client_files: tuple[str, ...] = _f(
        (), "Your own data: one labelled file per client, in client order (client-0 first).")
    client_data_file: str | None = _f(
        None, "Your own data: one labelled file split among num_clients clients by `partition` over its "
        "domain column (the paper's non-IID split by MATH subject: dirichlet, beta 0.1).")
    question_column: str = _f("question", "Data files: the column holding the question.")
    answer_column: str = _f("answer", "Data files: the column holding the reference answer.")
    domain_column: str = _f("domain", "Data files: the column holding the domain or subject (optional).")
    solution_column: str = _f(
        "solution", "Data files: the column holding a worked solution (optional; expert fine-tuning's target).")

    def __post_init__(self) -> None:
        self._check_files()
        if not self.domains:
            raise ConfigError("domains is empty: name at least one domain (see `fedgrpo domains`)")
        if len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"domains lists a domain twice ({', '.join(self.domains)}): list each once")
        # Whether each name is a domain, and has this difficulty level, is checked where the data is
        # built (`data.gym.check_domains`, also run by the CLI as it loads a config): the config
        # imports nothing above it.
        if self.difficulty < 0:
            raise ConfigError("difficulty must be 0 or more")
        if self.data_seed < 0:
            raise ConfigError(f"data_seed must be 0 or more, got {self.data_seed}")
        for name in ("pool_size", "aux_size", "eval_size", "client_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.val_size < 0:
            raise ConfigError(f"val_size must be 0 or more, got {self.val_size}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.public_size < 0:
            raise ConfigError(f"public_size must be 0 or more, got {self.public_size}")
        if self.probe_size < 0:
            raise ConfigError(f"probe_size must be 0 or more, got {self.probe_size}")
        if self.aux_size > self.pool_size:
            raise ConfigError(
                f"aux_size ({self.aux_size}) is larger than pool_size ({self.pool_size}): the auxiliary "
                "set is a small labelled sample; lower aux_size or raise pool_size"
            )
        if self.partition not in PARTITIONS:
            raise ConfigError(f"unknown partition {self.partition!r}: use one of {', '.join(PARTITIONS)}")
        if self.num_clients is not None and self.num_clients < 1:
            raise ConfigError(f"num_clients must be at least 1, got {self.num_clients}")
        if self.partition == "domain" and self.clients < len(self.domains) and not self.uses_files:
            raise ConfigError(
                f"partition=domain gives each client one domain, so {len(self.domains)} domains need "
                f"at least {len(self.domains)} clients (num_clients={self.clients}); raise num_clients "
                "or use partition=dirichlet"
            )
        if not self.dirichlet_beta > 0:
            raise ConfigError(f"dirichlet_beta must be > 0, got {self.dirichlet_beta}")

    @property
    def uses_files(self) -> bool:
        """Whether the data comes from the user's files rather than the generators."""
        return self.pool_file is not None

    @property
    def clients(self) -> int:
        if self.client_files:
            return len(self.client_files)
        return self.num_clients if self.num_clients is not None else len(self.domains)

    def eval_file_paths(self) -> dict[str, str]:
        """Evaluation set name -> path (NAME=PATH, or PATH named after its file)."""
        return dict(self._eval_entries())

    def val_file_paths(self) -> dict[str, str]:
        """Validation set name -> path (NAME=PATH, or PATH named after its file)."""
        return dict(self._entries(self.val_files))

    def _eval_entries(self) -> list[tuple[str, str]]:
        return self._entries(self.eval_files)

    @staticmethod
    def _entries(files: tuple[str, ...]) -> list[tuple[str, str]]:
        entries = []
        for entry in files:
            name, sep, path = entry.partition("=")
            entries.append((name, path) if sep else (Path(entry).stem, entry))
        return entries

    def _check_files(self) -> None:
        named = {"aux_file": self.aux_file, "eval_files": self.eval_files, "client_files": self.client_files,
                 "client_data_file": self.client_data_file, "val_files": self.val_files, "probe_file": self.probe_file}
        if self.pool_file is None:
            given = [k for k, v in named.items() if v]
            if given:
                raise ConfigError(f"{', '.join(given)} given without pool_file: data from files needs the "
                                  "training pool too; set pool_file")
            return
        missing = [k for k in ("aux_file", "eval_files") if not named[k]]
        if not (self.client_files or self.client_data_file):
            missing.append("client_files or client_data_file")
        if missing:
            raise ConfigError(f"pool_file needs {', '.join(missing)} as well: give every role its data")
        if self.client_files and self.client_data_file:
            raise ConfigError("give client_files (one per client) or client_data_file (split among clients), "
                              "not both")
        if self.client_files and self.num_clients not in (None, len(self.client_files)):
            raise ConfigError(f"num_clients={self.num_clients} but {len(self.client_files)} client_files; "
                              "leave num_clients unset or give one file per client")
        if self.client_data_file and self.num_clients is None:
            raise ConfigError("client_data_file needs num_clients: how many clients share it")
        names = [name for name, _ in self._eval_entries()]
        if len(set(names)) != len(names):
            raise ConfigError(f"two evaluation sets are named alike ({', '.join(names)}); write NAME=PATH")
        if self.val_files and self.val_fraction:
            raise ConfigError("give val_files (your validation sets) or val_fraction (held out of each evaluation "
                              "file), not both")
        val_names = [name for name, _ in self._entries(self.val_files)]
        if self.val_files and sorted(val_names) != sorted(names):
            raise ConfigError(f"val_files name {', '.join(val_names)} but the evaluation sets are "
                              f"{', '.join(names)}: give one validation set per evaluation set, NAME=PATH")
        paths = [("pool_file", self.pool_file), ("aux_file", self.aux_file),
                 ("client_data_file", self.client_data_file), ("probe_file", self.probe_file),
                 *(("eval_files", p) for p in self.eval_file_paths().values()),
                 *(("val_files", p) for p in self.val_file_paths().values()),
                 *(("client_files", p) for p in self.client_files)]
        for key, path in paths:
            if path is not None and not Path(path).expanduser().exists():
                raise ConfigError(f"{key}: {path!r} does not exist; check the path")


@dataclass(frozen=True)
class ModelConfig:
    server_model: str = _f(
        "tiny:micro",
        "Server policy: tiny:<preset> (built and pre-trained here, cached) or a local Hugging Face "
        "model directory. Nothing is downloaded.",
    )
    expert_model: str = _f(
        "tiny:micro",
        "Base of every client's expert, fine-tuned on the client's private data: tiny:<preset> or a "
        "local model directory.",
    )
    model_seed: int = _f(0, "Seed of model initialisation and training order.")
    pretrain_steps: int = _f(
        4000, "Optimizer steps of the tiny server model's public pre-training (with pretrain_target > 0: "
        "the most it may take).")
    pretrain_target: float = _f(
        0.35, "Pre-train the tiny server to the edge of competence: each domain until its sampled "
        "accuracy (T=1) on held-out public items reaches this, then only replayed; 0 = a fixed "
        "pretrain_steps on the whole public pool.")
    pretrain_probe_items: int = _f(
        128, "Edge pre-training: held-out public items per domain whose sampled answers (2 each) measure the domain's "
        "accuracy at every check.")
    pretrain_confirm: int = _f(
        2, "Edge pre-training: a domain counts as at the edge once its sampled accuracy has reached pretrain_target at "
        "this many consecutive checks (1 = the first time; more resists a lucky check: 2 was chosen on the validation "
        "split, benchmarks/README.md).")
    pretrain_resume_margin: float | None = _f(
        None, "Edge pre-training: a domain that reached pretrain_target and later falls below target minus this "
        "trains at full weight again until it is back; training ends at a check where every domain is at its edge. "
        "Unset = a reached domain is only replayed, whatever it does.")
    pretrain_replay: float = _f(
        0.1, "Edge pre-training: sampling weight of a domain that has reached pretrain_target, against 1 "
        "for one still learning (keeps it from being forgotten without teaching it much more).")
    expert_steps: int = _f(600, "Optimizer steps of each expert's fine-tuning on its private data.")
    expert_replay: float = _f(
        0.0, "Share of each expert's fine-tuning data drawn from the public pre-training pool (all domains), "
        "so that it stays sane outside its own domain; 0 = its private data only.")
    sft_batch_size: int = _f(64, "Batch size of supervised training (pre-training and experts).")
    sft_learning_rate: float = _f(3e-3, "Peak AdamW learning rate of supervised training.")
    cache_dir: str | None = _f(
        None, "Model cache directory; unset = $FEDGRPO_CACHE or ~/.cache/fedgrpo."
    )

    def __post_init__(self) -> None:
        for name in ("server_model", "expert_model"):
            check_model_spec(name, getattr(self, name))
        for name in ("pretrain_steps", "expert_steps", "model_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.pretrain_target <= 1:
            raise ConfigError(f"pretrain_target must be in [0, 1], got {self.pretrain_target}")
        if not 0 <= self.expert_replay < 1:
            raise ConfigError(f"expert_replay must be in [0, 1), got {self.expert_replay}")
        if self.pretrain_resume_margin is not None and not 0 <= self.pretrain_resume_margin < self.pretrain_target:
            raise ConfigError(f"pretrain_resume_margin must be in [0, pretrain_target), got {self.pretrain_resume_margin}")
        if self.pretrain_probe_items < 1 or self.pretrain_confirm < 1:
            raise ConfigError("pretrain_probe_items and pretrain_confirm must be at least 1")
        if not 0 <= self.pretrain_replay <= 1:
            raise ConfigError(f"pretrain_replay must be in [0, 1], got {self.pretrain_replay}")
        if self.sft_batch_size < 1:
            raise ConfigError(f"sft_batch_size must be at least 1, got {self.sft_batch_size}")
        if not 0 < self.sft_learning_rate < 1:
            raise ConfigError(f"sft_learning_rate must be in (0, 1), got {self.sft_learning_rate}")

    def resolved_cache_dir(self) -> Path:
        chosen = self.cache_dir or os.environ.get("FEDGRPO_CACHE") or "~/.cache/fedgrpo"
        return Path(chosen).expanduser()


def check_model_spec(name: str, spec: str) -> None:
    """A model spec is tiny:<preset> or an existing local directory; anything else names both."""
    if spec.startswith(TINY_PREFIX):
        preset = spec[len(TINY_PREFIX):]
        if preset not in TINY_PRESETS:
            raise ConfigError(
                f"{name}={spec!r}: unknown tiny preset {preset!r}; use one of "
                f"{', '.join(TINY_PREFIX + p for p in TINY_PRESETS)}"
            )
        return
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"{name}={spec!r} is not an existing directory; give a local Hugging Face model "
            f"directory or tiny:<preset> ({', '.join(TINY_PRESETS)}); nothing is downloaded"
        )


PROMPT_STYLES = ("prefill", "chat")
ANSWER_FORMATS = ("tags", "boxed")


@dataclass(frozen=True)
class PromptConfig:
    prompt_style: str = _f(
        "prefill", "How questions are put to every model (policy, experts, evaluation): prefill (the question "
        "and an opened <answer> tag; tiny models) or chat (the tokenizer's chat template, a system prompt "
        "asking for reasoning, then a final answer; real models).", choices=PROMPT_STYLES)
    answer_format: str = _f(
        "tags", "Chat style: where the final answer goes: tags (<think>...</think><answer>...</answer>, the "
        "paper's code) or boxed (the last \\boxed{...}, MATH).", choices=ANSWER_FORMATS)
    system_prompt: str | None = _f(
        None, "Chat style: the system prompt; unset = the answer format's own (src/fedgrpo/data/prompts.py).")
    tag_weight: float = _f(
        1.0, "Weight of the tag count reward (chat style with tags: 0.25 per tag present once; the paper's "
        "code: accuracy 8, format 1, tags 1).")

    def __post_init__(self) -> None:
        if self.tag_weight < 0:
            raise ConfigError(f"tag_weight must be 0 or more, got {self.tag_weight}")
        if self.prompt_style == "prefill" and self.answer_format != "tags":
            raise ConfigError("prompt_style=prefill pre-fills an <answer> tag: use answer_format=tags, or "
                              "prompt_style=chat for boxed answers")


@dataclass(frozen=True)
class EvalConfig:
    eval_samples: int = _f(8, "Samples per question for the mean sampled correctness (0 = greedy only).")
    eval_temperature: float = _f(1.0, "Sampling temperature of the sampled-correctness estimate.")
    max_new_tokens: int = _f(24, "Longest completion, in tokens, at evaluation and expert answering.")
    eval_batch_size: int = _f(256, "Prompts per generation batch.")

    def __post_init__(self) -> None:
        if self.eval_samples < 0:
            raise ConfigError(f"eval_samples must be 0 or more, got {self.eval_samples}")
        if not self.eval_temperature > 0:
            raise ConfigError(f"eval_temperature must be > 0, got {self.eval_temperature}")
        if self.max_new_tokens < 1 or self.eval_batch_size < 1:
            raise ConfigError("max_new_tokens and eval_batch_size must be at least 1")


SELECTIONS = ("graph", "random", "oracle", "all")
COMPETENCE_SELECTIONS = ("graph", "oracle")  # those with a competence per expert and question
ENCODER_NAMES = ("server", "ngram")
SCALE_REWARDS = ("none", "group", "batch")
# TRL 1.16's accepted values (`grpo_config.py`; its trainer raises on others only mid-training).
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
OVERLAP_MODES = ("auto", "on", "off")
# GRPOConfig fields FedGRPO sets from its own keys (field -> the keys that set it); grpo_args may
# not set them.
GRPO_OWNED: dict[str, tuple[str, ...]] = {
    "num_generations": ("experts_per_question", "generations_per_expert"),  # their product M*G
    "max_steps": ("train_steps",),
    "seed": ("train_seed",),
    **{key: (key,) for key in ("learning_rate", "temperature", "max_completion_length", "loss_type",
                               "scale_rewards", "beta", "save_steps", "steps_per_generation")},
}
# GRPOConfig fields derived from other settings.
GRPO_DERIVED = {
    "output_dir": "it is the run's output directory (output_dir / checkpoints)",
    "per_device_train_batch_size": "it is prompts_per_step * M * G; set those instead",
}
SCORER_MODES = ("gated", "model", "answer")
# scorers.adversary's zoo; those with a parameter take BEHAVIOUR:P, P a share in [0, 1]
ADVERSARY_BEHAVIOURS = ("invert", "random", "max", "probe_aware", "flip", "lazy", "targeted", "collude")
ADVERSARY_PARAMETERS = ("flip", "targeted")
ROBUST_AGGREGATIONS = ("mean", "median", "trimmed_mean")  # core.aggregate
MAX_PROBE_SHARE = 0.5  # at most half of the training questions may be probes (they train nothing)
# Keys that were replaced: their own error names the new key (a file or flag written before the change).
REPLACED_KEYS = {
    "recheck_every": "probe_share (issue 21: probes are training questions mixed in at a share, e.g. 0.05)",
    "recheck_items": "probe_share (issue 21: probes are training questions mixed in at a share, e.g. 0.05)",
}


def probe_count(pool_items: int, share: float) -> int:
    """How many probes are mixed into `pool_items` training questions so that they are `share` of
    the whole: ceil(share * pool_items / (1 - share)), so any share above 0 gives at least one.

    >>> probe_count(500, 0.05), probe_count(500, 0.0), probe_count(10, 0.5)
    (27, 0, 10)
    """
    return math.ceil(round(share * pool_items / (1.0 - share), 9))


@dataclass(frozen=True)
class FederationConfig:
    experts_per_question: int = _f(2, "M, experts selected per question (paper: 2).")
    generations_per_expert: int = _f(4, "G, candidates each selected expert scores; group size is M*G (paper: 4).")
    neighbours: int = _f(20, "L, auxiliary items nearest to a question that decide its experts (paper: 20).")
    selection: str = _f(
        "graph",
        "Expert selection: graph (confidence graph, the paper), random (the official code), "
        "oracle (the question's domain expert first), all (M must equal the number of clients).",
    )
    competence_threshold: float = _f(
        0.5, "Adaptive M: of the M experts selected for a question keep only those whose competence there "
        "(mean correctness on its L neighbours) is at least this, always the best one; the question's M*G "
        "candidates are split among those kept. 0 = the paper's fixed top-M. Selection graph and oracle only "
        "(random and all have no competence per question and keep their M).")
    competence_weighting: bool = _f(
        False, "Shrink each selected expert's rewards towards the question's competence-weighted mean reward by "
        "(1 - its competence): a barely competent expert's block then moves the advantages little.")
    encoder: str = _f("server", "Question encoder of the graph: server (frozen initial server model) or ngram.")
    scorer_mode: str = _f(
        "gated", "Client scoring: gated (answer-based when the client holds the question, else "
        "model-based), model (always the expert model), answer (labels only; others give no reward).",
    )
    expert_samples: int = _f(1, "Expert answers per question for model-based scoring: 1 = greedy, n = majority of n samples.")
    expert_timeout_s: float = _f(600.0, "Seconds an expert may take for one request before it counts as failed.")
    score_replication: bool = _f(
        False, "Every selected expert scores all M*G candidates of its question (M times the scoring traffic), "
        "and the server combines their rewards per candidate with robust_aggregation: robust to a lying "
        "expert when M >= 3. Off: each expert scores its own block of G (the paper).")
    robust_aggregation: str = _f(
        "median", "With score_replication: mean, median or trimmed_mean (drops a quarter of the values at each end) "
        "of the experts' rewards for one candidate.", choices=ROBUST_AGGREGATIONS)
    probe_share: float = _f(
        0.0, "Dishonest experts (the re-check): the share of the training questions that are probes, labelled items "
        "of the probe split (probe_size) mixed into GRPO's dataset, sampled, routed and sent like any question, so "
        "no expert can tell them apart; the server scores each expert's rewards on them against the gold answer "
        "(groups holding a right and a wrong answer only) and they train nothing. An expert whose accuracy is "
        "below recheck_threshold with posterior probability 0.99 (one-coin Dawid-Skene) is flagged: excluded and "
        "its questions re-routed, or corrected (recheck_correct_inverted). 0 = off; e.g. 0.05.")
    spot_check_share: float = _f(
        0.05, "With the re-check on (probe_share > 0): the share of each expert's question blocks also scored by a "
        "second competent expert (the next in the question's ranking whose competence clears "
        "competence_threshold, among those asked in the same round), as an item of its request like any other; "
        "the pairs feed the re-check's Dawid-Skene model beside the probes. Costs about this share more scoring "
        "traffic where a second competent expert exists. 0 = off.")
    recheck_threshold: float = _f(
        0.7, "An expert is flagged once its accuracy on values with known answers is below this with posterior "
        "probability 0.99 (measured at the defaults on groups with a right and a wrong answer: honest 0.83-1.0, "
        "inverting 0.0-0.17, random 0.5, always 1 0.35-0.44).")
    recheck_correct_inverted: bool = _f(
        True, "A flagged expert whose estimated accuracy is below 1/2 (it inverts its rewards) is corrected, not "
        "excluded: its rewards are used as 1 - reward (Dawid-Skene's reading of a rater worse than chance), and it "
        "is excluded once its accuracy is above 1 - recheck_threshold with posterior probability 0.99 (it stopped "
        "inverting). Off: every flagged expert is excluded.")
    adversaries: tuple[str, ...] = _f(
        (), "For measurements only: experts that lie after an honest calibration, as EXPERT:BEHAVIOUR[:P] with "
        "BEHAVIOUR invert, random, max, probe_aware (honest on what it saw at calibration), flip:P (flips a share "
        "P), lazy (1 where its own model is unsure), targeted:F (lies on a sub-topic, a share F of questions) or "
        "collude (probe_aware, for two experts of one domain); e.g. client-1:flip:0.3 (scorers/adversary.py).")
    selection_seed: int = _f(0, "Seed of random selection.")

    def __post_init__(self) -> None:
        if self.experts_per_question < 1:
            raise ConfigError(f"experts_per_question must be at least 1, got {self.experts_per_question}")
        if self.generations_per_expert < 2:
            raise ConfigError(
                f"generations_per_expert must be at least 2 (GRPO compares candidates), got "
                f"{self.generations_per_expert}"
            )
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be at least 1, got {self.neighbours}")
        for name, options in (("selection", SELECTIONS), ("encoder", ENCODER_NAMES), ("scorer_mode", SCORER_MODES)):
            if getattr(self, name) not in options:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(options)}")
        if not 0 <= self.competence_threshold <= 1:
            raise ConfigError(f"competence_threshold must be in [0, 1], got {self.competence_threshold}")
        if self.competence_weighting and self.selection not in COMPETENCE_SELECTIONS:
            raise ConfigError(
                f"competence_weighting needs a competence per expert and question: use selection graph or "
                f"oracle (got {self.selection}), or drop competence_weighting")
        if self.expert_samples < 1:
            raise ConfigError(f"expert_samples must be at least 1, got {self.expert_samples}")
        if not self.expert_timeout_s > 0:
            raise ConfigError(f"expert_timeout_s must be > 0, got {self.expert_timeout_s}")
        if self.score_replication and self.competence_weighting:
            raise ConfigError("score_replication and competence_weighting both combine several experts' rewards: "
                              "turn one of them off")
        if not 0 <= self.probe_share <= MAX_PROBE_SHARE:
            raise ConfigError(f"probe_share must be in [0, {MAX_PROBE_SHARE}] (the share of training questions that are "
                              f"probes; 0 = re-check off, e.g. 0.05), got {self.probe_share}")
        if not 0 <= self.spot_check_share <= 1:
            raise ConfigError(f"spot_check_share must be in [0, 1] (the share of question blocks a second expert also "
                              f"scores; 0 = off, e.g. 0.05), got {self.spot_check_share}")
        if not 0 < self.recheck_threshold < 1:
            raise ConfigError(f"recheck_threshold must be in (0, 1), got {self.recheck_threshold}")
        seen = set()
        for entry in self.adversaries:
            expert, sep, spec = entry.partition(":")
            behaviour, has_p, parameter = spec.partition(":")
            fix = (f"write EXPERT:BEHAVIOUR[:P] with BEHAVIOUR one of {', '.join(ADVERSARY_BEHAVIOURS)} and P (for "
                   f"{' and '.join(ADVERSARY_PARAMETERS)} only) a share in [0, 1], e.g. client-1:flip:0.3")
            if not sep or not expert or behaviour not in ADVERSARY_BEHAVIOURS:
                raise ConfigError(f"adversaries entry {entry!r}: {fix}")
            if has_p and (behaviour not in ADVERSARY_PARAMETERS or not _is_share(parameter)):
                raise ConfigError(f"adversaries entry {entry!r}: {fix}")
            if expert in seen:
                raise ConfigError(f"adversaries names {expert} twice: give each expert one behaviour")
            seen.add(expert)

    def adversary_of(self, expert_id: str) -> str | None:
        """The behaviour the config gives `expert_id` (None: honest)."""
        return dict(e.split(":", 1) for e in self.adversaries).get(expert_id)


@dataclass(frozen=True)
class TrainConfig:
    train_steps: int = _f(600, "GRPO optimizer steps.")
    prompts_per_step: int = _f(16, "Questions per optimizer step (each gets M*G candidates).")
    learning_rate: float = _f(1e-4, "AdamW learning rate of GRPO (constant schedule).")
    temperature: float = _f(1.0, "Sampling temperature of the policy's candidates (paper: 0.7; official code: 1.0).")
    max_completion_length: int = _f(24, "Longest candidate, in tokens.")
    scale_rewards: str = _f("group", "Advantage scaling: group (paper Eq. 8's std), none (official code), batch.")
    beta: float = _f(0.0, "KL coefficient to the reference model (0 loads none).")
    loss_type: str = _f("dr_grpo", "TRL loss aggregation: " + ", ".join(LOSS_TYPES) + " (TRL's own default: dapo).")
    accuracy_weight: float = _f(8.0, "Weight of the experts' reward (paper code: 8).")
    format_weight: float = _f(1.0, "Weight of the server-side format reward (paper code: 1); 0 turns it off.")
    save_steps: int = _f(
        50, "Checkpoint every this many steps (rounded up to a multiple of steps_per_generation: a checkpoint never "
        "falls inside a generation batch); a rerun with the same output_dir resumes where it stopped, with the "
        "metrics of an uninterrupted run.")
    steps_per_generation: int = _f(
        4, "Amortisation: optimizer steps per generation batch (TRL's steps_per_generation); each selected "
        "expert gets one message per this many steps, later steps train on samples up to this-1 steps old "
        "(4: the same mean gain as 1 over 5 seeds, a quarter of the messages, faster on every engine).")
    overlap_rewards: str = _f(
        "auto", "One-step off-policy: request a generation batch's rewards in the background while training on "
        "the previous batch (TRL's importance ratio corrects the one-batch lag; docs/deployment.md, Overlap). "
        "auto = on for engine deployment, where it hides the round trip (measured in docs/deployment.md), off "
        "elsewhere, where it buys nothing measurable and training uses TRL's public API only; on; off.",
        choices=OVERLAP_MODES)
    train_seed: int = _f(0, "Seed of GRPO sampling and data order.")
    lora_rank: int = _f(
        0, "LoRA rank of the policy's adapter, trained through TRL's peft_config (a policy too big to train in "
        "full); 0 = full fine-tuning. The final model is saved merged (final-model) and as an adapter.")
    lora_alpha: int = _f(32, "LoRA scaling alpha (with lora_rank > 0).")
    lora_dropout: float = _f(0.0, "LoRA dropout (with lora_rank > 0).")
    lora_target_modules: tuple[str, ...] = _f(
        ("all-linear",), "Modules that get LoRA adapters: names (q_proj v_proj ...) or all-linear.")
    grpo_args: tuple[str, ...] = _f(
        (), "Extra GRPOConfig fields as key=value, passed to TRL untouched (e.g. bf16=true use_vllm=true)."
    )

    def __post_init__(self) -> None:
        for name in ("train_steps", "prompts_per_step", "max_completion_length", "save_steps",
                     "steps_per_generation"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ConfigError(f"unknown scale_rewards {self.scale_rewards!r}: use one of {', '.join(SCALE_REWARDS)}")
        if self.accuracy_weight <= 0 or self.format_weight < 0:
            raise ConfigError("accuracy_weight must be > 0 and format_weight >= 0")
        if self.lora_rank < 0 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_rank must be 0 or more, lora_alpha at least 1, lora_dropout in [0, 1)")
        if self.lora_rank and not self.lora_target_modules:
            raise ConfigError("lora_target_modules is empty: name the modules to adapt, or all-linear")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown loss_type {self.loss_type!r}: use one of {', '.join(LOSS_TYPES)}")
        self.grpo_extra  # noqa: B018 - parses and checks grpo_args now, not when training starts

    @property
    def grpo_extra(self) -> dict[str, Any]:
        """`grpo_args` as GRPOConfig keyword arguments, values read as YAML scalars (true, 0.5, text).

        A key FedGRPO sets itself is refused with the setting to use instead; whether a key is a
        GRPOConfig field at all is checked against the installed TRL when the trainer is built."""
        import yaml

        extra: dict[str, Any] = {}
        for arg in self.grpo_args:
            key, sep, text = arg.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"grpo_args entry {arg!r} is not key=value; write e.g. bf16=true")
            if key in GRPO_OWNED:
                own = GRPO_OWNED[key]
                raise ConfigError(
                    f"GRPO option {key!r} is one of FedGRPO's own settings, not an extra GRPOConfig "
                    f"field; set {' and '.join(own)} (flag {', '.join('--' + k.replace('_', '-') for k in own)})")
            if key in GRPO_DERIVED:
                raise ConfigError(f"GRPO option {key!r} cannot be set through grpo_args: {GRPO_DERIVED[key]}")
            try:
                extra[key] = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ConfigError(f"grpo_args {arg!r}: the value is not a valid scalar") from None
        return extra


ENGINES = ("embedded", "simulation", "deployment")


@dataclass(frozen=True)
class EngineConfig:
    engine: str = _f(
        "embedded",
        "How requests reach the experts: embedded (in-process, no servers), simulation (Flower "
        "Simulation runtime, one virtual SuperNode per client) or deployment (an existing Flower "
        "SuperLink at superlink_address; see docs/deployment.md).",
    )
    superlink_address: str = _f(
        "127.0.0.1:9191", "Deployment: host:port of the SuperLink (one HTTP port for SuperNodes and `flwr run`)."
    )
    superlink_root_certificates: str | None = _f(
        None, "Deployment: CA certificate (PEM) the SuperLink's TLS certificate is checked against; "
        "unset = an insecure (plain HTTP) connection, for loopback tests only.",
    )
    node_wait_s: float = _f(
        120.0, "Flower engines: seconds the server waits for every client's SuperNode to answer hello.",
    )
    reroute_failed: bool = _f(
        True, "When an expert fails or times out, send its questions to the next-best expert by "
        "competence and stop asking it for the rest of the run (off: its rewards stay missing).",
    )
    reroute_competent_only: bool = _f(
        False, "With reroute_failed: a lost expert's questions go only to substitutes whose competence there clears "
        "competence_threshold (graph and oracle selection); a question without one gets no reward rather than "
        "an incompetent expert's.")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        host, sep, port = self.superlink_address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"superlink_address {self.superlink_address!r} is not host:port; write e.g. 127.0.0.1:9191"
            )
        if self.superlink_root_certificates is not None and not Path(
                self.superlink_root_certificates).expanduser().is_file():
            raise ConfigError(
                f"superlink_root_certificates {self.superlink_root_certificates!r} is not a file; give "
                "the SuperLink's CA certificate (PEM) or leave it unset for an insecure loopback link"
            )
        if not self.node_wait_s > 0:
            raise ConfigError(f"node_wait_s must be > 0, got {self.node_wait_s}")


LDP_MECHANISMS = ("randomized_response", "laplace")  # privacy.mechanisms.VALUE_MECHANISMS


@dataclass(frozen=True)
class PrivacyConfig:
    expert_epsilon: float | None = _f(
        None, "Record-level DP for each client's private data (the mode to use): every expert is fine-tuned with "
        "DP-SGD (Opacus: per-sample clipping, Poisson sampling, Gaussian noise calibrated to this epsilon over "
        "its planned steps), so every reward, calibration bit and probe answer it ever sends is post-processing: "
        "the whole run costs this epsilon per client. Unset = experts trained without DP.")
    expert_delta: float = _f(1e-5, "Delta of each expert's DP-SGD guarantee; at most 1/n for n private items.")
    expert_clip_norm: float = _f(1.0, "DP-SGD: per-sample gradient clipping norm C (noise std = multiplier x C).")
    expert_dp_batch_size: int | None = _f(
        None, "DP-SGD: expected batch size under Poisson sampling (sampling rate = this / n); unset = sft_batch_size.")
    expert_dp_learning_rate: float | None = _f(
        None, "DP-SGD: peak learning rate of the expert's fine-tuning; unset = sft_learning_rate.")
    label_epsilon: float | None = _f(
        None, "Label-level DP for answer-based scoring: each private label a client scores against is randomised "
        "once (RRWithPrior, Ghazi et al. 2021, prior = its expert's sampled answers) and the noisy label reused: "
        "this epsilon per record's label, however often it is queried. Unset = exact labels.")
    reward_epsilon: float | None = _f(
        None, "Per-value local DP (shown for comparison; it protects one value, not a record): every value a "
        "client sends (each reward, each calibration bit) is noised on the client with noise from its own "
        "secret; epsilon composes over the distinct values it releases. Unset = off.")
    reward_mechanism: str = _f(
        "randomized_response", "Per-value LDP of the rewards: randomized_response (0/1 rewards, the built-in "
        "scorers; calibration values always use it) or laplace (real rewards in [0, 1], clipped).",
        choices=LDP_MECHANISMS)
    privacy_delta: float = _f(1e-5, "Delta at which each client's per-value epsilon is reported and budgeted.")
    privacy_budget: float | None = _f(
        None, "Per-value LDP: each client's epsilon budget (at privacy_delta) over all its distinct releases, "
        "calibration included, kept in its own journal across restarts; a client refuses a request that would "
        "exceed it, and its questions go to the next-best expert. Unset = no budget.")
    reward_debias: bool = _f(
        True, "Server side: replace each randomised-response value r by its unbiased estimate (r - (1 - p)) / "
        "(2p - 1) before the advantage and the confidence graph.")

    def __post_init__(self) -> None:
        for name in ("expert_epsilon", "label_epsilon", "reward_epsilon"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}; or leave it unset (off)")
        if not 0 < self.expert_delta < 1:
            raise ConfigError(f"expert_delta must be in (0, 1/n] for n private items, got {self.expert_delta}")
        if not self.expert_clip_norm > 0:
            raise ConfigError(f"expert_clip_norm must be > 0, got {self.expert_clip_norm}")
        if self.expert_dp_batch_size is not None and self.expert_dp_batch_size < 1:
            raise ConfigError(f"expert_dp_batch_size must be at least 1, got {self.expert_dp_batch_size}")
        if self.expert_dp_learning_rate is not None and not 0 < self.expert_dp_learning_rate < 1:
            raise ConfigError(f"expert_dp_learning_rate must be in (0, 1), got {self.expert_dp_learning_rate}")
        if not 0 < self.privacy_delta < 1:
            raise ConfigError(f"privacy_delta must be in (0, 1), got {self.privacy_delta}")
        if self.privacy_budget is not None:
            if self.reward_epsilon is None:
                raise ConfigError("privacy_budget needs reward_epsilon: set the epsilon of each release, or drop "
                                  "the budget")
            if self.privacy_budget < self.reward_epsilon:
                raise ConfigError(f"privacy_budget ({self.privacy_budget}) is below one release (reward_epsilon "
                                  f"{self.reward_epsilon}): raise the budget or lower reward_epsilon")


@dataclass(frozen=True)
class BaselineConfig:
    fedpetuning_rounds: int = _f(
        10, "FedPETuning: FedAvg rounds, every client every round (its paper: 100 rounds, a tenth of 100 clients).")
    fedpetuning_local_epochs: int = _f(1, "FedPETuning SFT: local epochs per round over the client's data (its paper: 1).")
    fedpetuning_batch_size: int = _f(32, "FedPETuning SFT: local batch size (its paper: 32).")
    fedpetuning_learning_rate: float = _f(
        1e-3, "FedPETuning: learning rate of the local LoRA update (its paper: 5e-4, 1e-3 for small tasks).")
    fedpetuning_lora_rank: int = _f(8, "FedPETuning: LoRA rank of the shared adapter (its paper: 8).")
    fedpetuning_lora_alpha: int = _f(16, "FedPETuning: LoRA alpha.")
    dpsda_epsilon: float = _f(
        4.0, "DPSDA-FL: each client's privacy budget epsilon over all its Private Evolution rounds (PE's text "
        "example: 1; PrE-Text: 1.29 or 7.58).")
    dpsda_delta: float | None = _f(
        None, "DPSDA-FL: delta of each client's (epsilon, delta) guarantee; unset = 1 / (n ln n), n its private items "
        "(PE's choice).")
    dpsda_rounds: int = _f(5, "DPSDA-FL: Private Evolution rounds T, one noisy histogram release each (PE: 11).")
    dpsda_candidates: int = _f(256, "DPSDA-FL: candidate samples per round N (laptop scale; PE text: 2,000).")
    dpsda_threshold: float = _f(
        1.0, "DPSDA-FL: noisy vote counts below this many noise standard deviations are zeroed (PE's threshold H).")
    dpsda_synthetic_size: int = _f(
        500, "DPSDA-FL: distinct synthetic items each client uploads (4 clients x 500 = the 2,000 training questions "
        "FedGRPO's server gets); fewer if its last histogram supports fewer.")
    dpsda_sft_epochs: int = _f(3, "DPSDA-FL SFT: epochs of the server's supervised training on the pooled synthetic set.")
    dpsda_sft_learning_rate: float | None = _f(
        None, "DPSDA-FL SFT: peak learning rate of the server's fine-tuning on the synthetic set (chosen on "
        "validation, docs/bench.md); unset = sft_learning_rate.")

    def __post_init__(self) -> None:
        for name in ("fedpetuning_rounds", "fedpetuning_local_epochs", "fedpetuning_batch_size",
                     "fedpetuning_lora_rank", "fedpetuning_lora_alpha", "dpsda_rounds", "dpsda_candidates",
                     "dpsda_synthetic_size", "dpsda_sft_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.fedpetuning_learning_rate < 1:
            raise ConfigError(f"fedpetuning_learning_rate must be in (0, 1), got {self.fedpetuning_learning_rate}")
        if self.dpsda_sft_learning_rate is not None and not 0 < self.dpsda_sft_learning_rate < 1:
            raise ConfigError(f"dpsda_sft_learning_rate must be in (0, 1), got {self.dpsda_sft_learning_rate}")
        if not self.dpsda_epsilon > 0:
            raise ConfigError(f"dpsda_epsilon must be > 0, got {self.dpsda_epsilon}")
        if self.dpsda_delta is not None and not 0 < self.dpsda_delta < 1:
            raise ConfigError(f"dpsda_delta must be in (0, 1), got {self.dpsda_delta}; or leave it unset")
        if self.dpsda_threshold < 0:
            raise ConfigError(f"dpsda_threshold must be 0 or more, got {self.dpsda_threshold}")


@dataclass(frozen=True)
class OutputConfig:
    output_dir: str | None = _f(None, "Where this run's outputs go; unset = runs/<command>-<time>.")


@dataclass(frozen=True)
class FedGRPOConfig:
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        m, k = self.federation.experts_per_question, self.data.clients
        if m > k:
            raise ConfigError(
                f"experts_per_question ({m}) is larger than the number of clients ({k}); lower "
                "experts_per_question or raise num_clients"
            )
        if self.federation.selection == "all" and m != k:
            raise ConfigError(
                f"selection=all sends every question to all {k} clients: set experts_per_question={k}"
            )
        p = self.privacy
        if p.expert_epsilon is not None:
            if self.models.expert_steps == 0:
                raise ConfigError("expert_epsilon trains each expert with DP-SGD, but expert_steps is 0 (the experts "
                                  "are the public base): set expert_steps, or drop expert_epsilon")
            n = self.data.client_size
            if not self.data.uses_files and p.expert_delta > 1.0 / n:
                raise ConfigError(f"expert_delta {p.expert_delta:g} is above 1/n for a client with {n} private items "
                                  f"(client_size); set expert_delta to at most {1.0 / n:.3g}")
            if not self.data.uses_files and (p.expert_dp_batch_size or self.models.sft_batch_size) > n:
                raise ConfigError(f"the DP-SGD expected batch ({p.expert_dp_batch_size or self.models.sft_batch_size}) "
                                  f"is larger than a client's {n} private items; lower expert_dp_batch_size")
        share = self.federation.probe_share
        if share > 0 and self.data.uses_files and self.data.probe_file is None:
            raise ConfigError("probe_share with your own data needs labelled probes: give probe_file (questions in no "
                              "other file), or set probe_share 0")
        if share > 0 and not self.data.uses_files:
            # The largest domain share of the pool (`data.partition`: even shares) needs the most probes.
            needed = probe_count(math.ceil(self.data.pool_size / len(self.data.domains)), share)
            if needed > self.data.probe_size:
                raise ConfigError(f"probe_share {share:g} mixes {needed} probes per domain into the training pool, but "
                                  f"probe_size reserves {self.data.probe_size}: raise probe_size to {needed} or lower "
                                  "probe_share")
        if (self.uses_overlap and self.engine.engine == "embedded" and self.federation.expert_samples > 1
                and not self.data.use_ground_truth):
            # Sampled expert answers reseed the process-wide torch RNG in a forked state while the
            # training thread samples from it: neither run would be reproducible.
            raise ConfigError(
                "overlap_rewards on the embedded engine needs greedy experts: set expert_samples=1, "
                "overlap_rewards=off (or auto), or use engine simulation or deployment (experts in their "
                "own processes)"
            )

    @property
    def uses_recheck(self) -> bool:
        """Whether the re-check runs: probes are mixed in (probe_share) and experts score (ground
        truth asks no expert, so it has nothing to check and mixes no probe)."""
        return self.federation.probe_share > 0 and not self.data.use_ground_truth

    @property
    def uses_overlap(self) -> bool:
        """`overlap_rewards` resolved: auto is on for a Flower Deployment with expert rewards only
        (the only engine where the round trip costs enough to hide; ground truth asks no expert)."""
        mode = self.train.overlap_rewards
        if mode == "auto":
            return self.engine.engine == "deployment" and not self.data.use_ground_truth
        return mode == "on"

    def to_flat(self) -> dict[str, Any]:
        """Every field under its flat name, in declaration order (YAML-friendly values)."""
        out: dict[str, Any] = {}
        for section in _sections():
            for f in fields(section.type):
                value = getattr(getattr(self, section.name), f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """Flower run config: flat kebab-case keys and scalar values only (Flower allows no lists or
        nulls), so a list becomes comma-separated names and an unset value an empty string."""
        out: dict[str, bool | int | float | str] = {}
        for name, value in self.to_flat().items():
            if isinstance(value, list):
                value = ",".join(value)
            out[name.replace("_", "-")] = "" if value is None else value
        return out

    def to_run_config_toml(self) -> str:
        """The `[tool.flwr.app.config]` table of a Flower App (pyproject.toml) for this config."""
        def value(v: bool | float | str) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return repr(v)

        return "\n".join(["[tool.flwr.app.config]"] + [f"{k} = {value(v)}" for k, v in self.to_run_config().items()]) + "\n"

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FedGRPOConfig:
        """The inverse of `to_run_config`; unknown keys are refused with the closest known one."""
        return build_config(cli_values=dict(run_config))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_flat(), sort_keys=False)


@dataclass(frozen=True)
class _Section:
    name: str
    type: type


def _sections() -> list[_Section]:
    # Resolved hints, not Field.type: with postponed annotations Field.type is only a string.
    hints = typing.get_type_hints(FedGRPOConfig)
    return [_Section(f.name, hints[f.name]) for f in fields(FedGRPOConfig)]


def section_type(name: str) -> type:
    return next(s.type for s in _sections() if s.name == name)


def field_index() -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Flat name -> (section name, field). Names are unique across the tree (tested)."""
    index: dict[str, tuple[str, dataclasses.Field[Any]]] = {}
    for section in _sections():
        for f in fields(section.type):
            index[f.name] = (section.name, f)
    return index


def field_type(name: str) -> Any:
    """The resolved type hint of a flat field name."""
    section, _ = field_index()[name]
    return typing.get_type_hints(section_type(section))[name]


def _coerce(name: str, value: Any, tp: Any, from_text: bool) -> Any:
    """Check (and, for text from the command line, parse) one value against its declared type."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_text and value in ("", "none", "None")):
            return None
        return _coerce(name, value, args[0], from_text)
    if origin is tuple:
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of names, got {value!r}")
        return tuple(value)
    if tp is bool:
        if from_text and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if from_text and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        # Text is parsed from files too: PyYAML reads `1e-3` (no dot) as a string.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        choices = field_index()[name][1].metadata.get("choices")
        if choices and isinstance(value, bool) and "on" in choices:
            value = "on" if value else "off"  # YAML reads on/off/true/false as booleans
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {name}")


def _normalise_key(key: str) -> str:
    return key.strip().replace("-", "_")


def flatten_file_values(values: dict[str, Any]) -> dict[str, Any]:
    """Accept flat keys or keys grouped under section tables (data:, models:, ...)."""
    sections = {s.name for s in _sections()}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        key = _normalise_key(str(key))
        if key in sections and isinstance(value, dict):
            flat.update({_normalise_key(str(k)): v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) file into flat keys; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; check the path given to --config")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            parsed = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            parsed = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {str(path)!r}: use a .yaml, .yml or .toml file")
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {str(path)!r} is malformed ({first_line}); fix its syntax") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value pairs")
    return flatten_file_values(parsed)


def build_config(
    file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None,
    check_data: Callable[[DataConfig], Any] | None = None,
) -> FedGRPOConfig:
    """Merge defaults < file values < CLI values, type-check each value and run every check once.

    File values must already have their declared types (YAML/TOML carry them); CLI values may be text.
    `check_data` runs on the data section before the checks across sections, so a wrong domain
    name is reported before what it would imply (the CLI passes `data.gym.check_domains`'s check;
    the config itself imports nothing above it).
    """
    index = field_index()
    merged: dict[str, tuple[Any, bool]] = {}
    for values, from_text in ((file_values or {}, False), (cli_values or {}, True)):
        for key, value in values.items():
            name = _normalise_key(key)
            if name in REPLACED_KEYS:
                raise ConfigError(f"config key {key!r} was replaced: use {REPLACED_KEYS[name]}")
            if name not in index:
                close = difflib.get_close_matches(name, list(index), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else "; see `fedgrpo config --help`"
                raise ConfigError(f"unknown config key {key!r}{hint}")
            merged[name] = (value, from_text)
    per_section: dict[str, dict[str, Any]] = {s.name: {} for s in _sections()}
    for name, (value, from_text) in merged.items():
        section, f = index[name]
        per_section[section][name] = _coerce(name, value, field_type(name), from_text)
    sections = {s.name: s.type(**per_section[s.name]) for s in _sections()}
    if check_data is not None:
        check_data(sections["data"])
    return FedGRPOConfig(**sections)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                check_data: Callable[[DataConfig], Any] | None = None) -> FedGRPOConfig:
    """The public entry point: an optional file plus overrides (CLI text or typed values)."""
    return build_config(read_config_file(path) if path else None, overrides, check_data)


def render_config_docs() -> str:
    """Markdown reference of every field; docs/config.md is this text (a test keeps it current)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `fedgrpo config --docs` from `src/fedgrpo/config.py`; do not edit by hand.",
        "Every key works flat in a YAML/TOML file (`aux_size: 50`), under its section (`data:`), or as a",
        "flag (`--aux-size 50`). Precedence: flags > file > defaults.",
    ]
    for section in _sections():
        lines += ["", f"## {section.name}", "", "| key | flag | default | meaning |", "|---|---|---|---|"]
        for f in fields(section.type):
            default = f.default
            shown = ", ".join(default) if isinstance(default, tuple) else ("unset" if default is None else default)
            lines.append(f"| `{f.name}` | `--{f.name.replace('_', '-')}` | `{shown}` | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"
