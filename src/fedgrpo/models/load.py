"""Resolve model specs into local model directories, building and caching tiny models on demand.

A spec is ``tiny:<preset>`` or a local Hugging Face model directory (checked by the config). The tiny
server base is pre-trained on the public pool; each expert is its base fine-tuned on the client's private
shard, as a client would fine-tune a public model on its own data.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.config import TINY_PREFIX, ModelConfig
from fedgrpo.data.prompts import PREFILL, PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.errors import FedGRPOError
from fedgrpo.models.cache import get_or_build, items_digest, library_versions
from fedgrpo.models.generate import Prompt
from fedgrpo.progress import NullProgress, ProgressSink

# from_pretrained enters process-global init contexts (meta device); two threads loading at once
# (experts in the embedded engine's pool) can leave the other's weights on the meta device.
_LOAD_LOCK = threading.Lock()


def load_model(path: str | Path) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local directory, in the dtype it was saved in, on the GPU when
    there is one (else the CPU); never touches the network. Thread-safe."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        with _LOAD_LOCK:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # The dtype the checkpoint was saved in: a bf16 model (real checkpoints, on a GPU) stays
            # bf16, the tiny models stay float32.
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="auto")
    except (OSError, ValueError) as exc:
        raise FedGRPOError(
            f"cannot load a causal LM from {str(path)!r} ({str(exc).splitlines()[0]}); give a directory "
            "written by save_pretrained with its tokenizer, or tiny:<preset>"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    return model, tokenizer


def supervised_pairs(questions: Sequence[Question], style: PromptStyle) -> list[tuple[Prompt, str]]:
    """(prompt, target completion) for every labelled question, in `style`: the answer (prefill), or a
    worked solution (the item's ``solution``, when it has one) and the answer in the chat layout."""
    return [(style.prompt(q.question), style.target(q.answer, q.metadata.get("solution")))
            for q in questions if q.answer]


def _data_digest(questions: Sequence[Question]) -> str:
    # A worked solution is a training target too (chat style); items without one hash as before.
    return items_digest(
        f"{q.question_id}\t{q.answer}" + (f"\t{q.metadata['solution']}" if "solution" in q.metadata else "")
        for q in questions)


def local_model_identity(path: Path) -> str:
    """Identify a local model directory cheaply: path, and every file's name, size and modification
    time. Sizes alone are not enough - a model retrained in place keeps its sizes - and hashing the
    weights of a large model would cost seconds per run."""
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.glob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


PROBE_SAMPLES = 2  # samples per probe item at temperature 1
PROBE_EVERY = 100  # optimizer steps between two probes
PROBE_MAX_NEW_TOKENS = 24
PRETRAIN_LOG = "fedgrpo-pretrain-log.json"  # the edge pre-training log, beside the base's weights


def split_probe(public: Sequence[Question], probe_items: int = 128) -> tuple[dict[str, list[Question]],
                                                                          dict[str, list[Question]]]:
    """(training items, probe items), each per domain: the first `probe_items` public items of each
    domain are the probe, never trained on."""
    probe: dict[str, list[Question]] = {}
    train: dict[str, list[Question]] = {}
    for q in public:
        held = probe.setdefault(q.domain, [])
        (held if len(held) < probe_items else train.setdefault(q.domain, [])).append(q)
    return train, probe


def sampled_accuracy(model: Any, tokenizer: Any, questions: Sequence[Question], samples: int, seed: int) -> float:
    """Mean correctness of `samples` answers per question sampled at temperature 1."""
    from fedgrpo.data.gym import is_correct
    from fedgrpo.models.generate import generate_completions

    drawn = generate_completions(model, tokenizer, [PREFILL.prompt(q.question) for q in questions],
                                 max_new_tokens=PROBE_MAX_NEW_TOKENS, num_samples=samples, temperature=1.0,
                                 batch_size=256, seed=seed)
    bits = [is_correct(q, PREFILL.extract(c)) for q, cs in zip(questions, drawn, strict=True) for c in cs]
    return sum(bits) / len(bits) if bits else 0.0


def base_recipe(preset: str, public: Sequence[Question], config: ModelConfig) -> dict[str, Any]:
    """Everything that defines a tiny base model, its cache key's input: architecture, tokenizer
    (its full serialisation, vocabulary included), training knobs and rule, data, versions."""
    from fedgrpo.models.tiny import PRESETS, tokenizer_fingerprint

    recipe: dict[str, Any] = {
        "role": "base",
        "preset": preset,
        "architecture": vars(PRESETS[preset]),
        "tokenizer": tokenizer_fingerprint(),
        "steps": config.pretrain_steps,
        "batch_size": config.sft_batch_size,
        "learning_rate": config.sft_learning_rate,
        "seed": config.model_seed,
        "schedule": "constant",
        "data": _data_digest(public),
        "versions": library_versions(),
    }
    if config.pretrain_target > 0:
        recipe["edge"] = {"target": config.pretrain_target, "replay": config.pretrain_replay,
                          "probe_items": config.pretrain_probe_items, "probe_samples": PROBE_SAMPLES,
                          "check_every": PROBE_EVERY, "max_new_tokens": PROBE_MAX_NEW_TOKENS}
        if config.pretrain_confirm != 1:  # (absent at 1: the bases built before the key existed stay cached)
            recipe["edge"]["confirm"] = config.pretrain_confirm
        if config.pretrain_resume_margin is not None:
            recipe["edge"]["resume_margin"] = config.pretrain_resume_margin
    return recipe


def base_model_dir(
    spec: str, public: Sequence[Question], config: ModelConfig, progress: ProgressSink = NullProgress()
) -> tuple[Path, bool]:
    """The base model for `spec`: a local directory as given, or the cached pre-trained tiny model.
    Returns (directory, was_cached).

    With `config.pretrain_target` > 0 the tiny base is pre-trained to the edge of competence per
    domain (`fedgrpo.models.pretrain.train_to_edge`): each domain until its sampled accuracy on a
    held-out public probe reaches the target, at most `pretrain_steps` steps in all. With 0 it
    trains exactly `pretrain_steps` steps on the whole public pool."""
    if not spec.startswith(TINY_PREFIX):
        return Path(spec).expanduser(), True
    preset = spec[len(TINY_PREFIX):]
    edge = config.pretrain_target > 0
    recipe = base_recipe(preset, public, config)

    def build(out: Path) -> None:
        import json

        from fedgrpo.models.pretrain import EdgeRule, train_supervised, train_to_edge
        from fedgrpo.models.tiny import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        model = build_model(preset, tokenizer, config.model_seed)
        with progress.phase(f"pre-train server base ({spec})", config.pretrain_steps) as advance:
            if not edge:
                train_supervised(
                    model, tokenizer, supervised_pairs(public, PREFILL), steps=config.pretrain_steps,
                    batch_size=config.sft_batch_size, learning_rate=config.sft_learning_rate,
                    seed=config.model_seed, schedule="constant", on_step=lambda step, loss: advance(1),
                )
            else:
                by_domain, probe = split_probe(public, config.pretrain_probe_items)
                log = train_to_edge(
                    model, tokenizer, {d: supervised_pairs(qs, PREFILL) for d, qs in by_domain.items()},
                    lambda m: {d: sampled_accuracy(m, tokenizer, probe[d], PROBE_SAMPLES, config.model_seed)
                               for d in by_domain},
                    EdgeRule(config.pretrain_target, config.pretrain_steps, PROBE_EVERY, config.pretrain_replay,
                             config.pretrain_confirm, config.pretrain_resume_margin),
                    batch_size=config.sft_batch_size, learning_rate=config.sft_learning_rate,
                    seed=config.model_seed, on_step=lambda step, loss: advance(1),
                    on_check=lambda c: progress.log(
                        f"pre-training step {c['step']}: sampled accuracy "
                        + ", ".join(f"{d} {100 * a:.0f}%" for d, a in c["accuracy"].items())),
                )
                (out / PRETRAIN_LOG).write_text(json.dumps(log, indent=1))
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return get_or_build(config.resolved_cache_dir(), "base", recipe, build)


GUARANTEE_FILE = "fedgrpo-privacy.json"  # a DP-trained model's record-level guarantee, beside its weights


def read_guarantee(model_dir: Path) -> dict[str, Any] | None:
    """The record-level DP guarantee a model directory records (None: trained without DP, or unknown)."""
    import json

    path = Path(model_dir) / GUARANTEE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def expert_model_dir(
    base_dir: Path,
    expert_id: str,
    shard: Sequence[Question],
    seed: int,
    config: ModelConfig,
    style: PromptStyle,
    progress: ProgressSink = NullProgress(),
    dp: Any = None,
) -> tuple[Path, bool]:
    """An expert: `base_dir` fine-tuned on the client's private `shard` (targets in `style`). Returns
    (directory, was_cached). With ``expert_steps`` 0 the expert is the base itself (no copy).

    With `dp` (a `privacy.plan.ExpertDP`) the fine-tuning is DP-SGD (`models.dp_sgd`) to that
    target; the cache key holds the DP settings (never the noise seed, which comes from fresh OS
    entropy: the noise of a cached DP expert is unknown to anyone) and the directory records the
    guarantee (`GUARANTEE_FILE`)."""
    if config.expert_steps == 0:
        return base_dir, True
    recipe = {
        "role": "expert",
        "parent": local_model_identity(base_dir),
        "prompt_style": [style.style, style.answer_format, style.system_prompt],
        "steps": config.expert_steps,
        "batch_size": config.sft_batch_size,
        "learning_rate": config.sft_learning_rate,
        "seed": seed,
        "data": _data_digest(shard),
        "versions": library_versions(),
    }
    if dp is not None:
        recipe["dp_sgd"] = dp.recipe()
        recipe["versions"] = {**recipe["versions"], "opacus": _version("opacus")}

    def build(out: Path) -> None:
        from fedgrpo.models.pretrain import train_supervised

        model, tokenizer = load_model(base_dir)
        pairs = supervised_pairs(shard, style)
        with progress.phase(f"train expert {expert_id}" + (" with DP-SGD" if dp else ""), config.expert_steps) as advance:
            if dp is None:
                train_supervised(
                    model, tokenizer, pairs, steps=config.expert_steps,
                    batch_size=config.sft_batch_size, learning_rate=config.sft_learning_rate, seed=seed,
                    on_step=lambda step, loss: advance(1),
                )
            else:
                guarantee = _train_dp(model, tokenizer, pairs, dp, lambda step, loss: advance(1))
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if dp is not None:
            from fedgrpo.durable import write_json_atomic

            write_json_atomic(out / GUARANTEE_FILE, guarantee)

    return get_or_build(config.resolved_cache_dir(), "expert", recipe, build)


def dp_guarantee(dp: Any, records: int) -> dict[str, Any]:
    """The guarantee DP-SGD to `dp`'s target gives a client with `records` private items: Opacus's
    noise multiplier for it and its accountant's epsilon for the steps actually planned."""
    from fedgrpo.models import dp_sgd

    rate = dp.sampling_rate(records)
    noise = dp_sgd.noise_multiplier(dp.epsilon, dp.delta, rate, dp.steps)
    return {"unit": "record", "mechanism": "dp-sgd", "accountant": dp_sgd.ACCOUNTANT,
            "target_epsilon": dp.epsilon, "epsilon": round(dp_sgd.accountant_epsilon(noise, rate, dp.steps, dp.delta), 4),
            "delta": dp.delta, "noise_multiplier": noise, "clip_norm": dp.clip_norm,
            "sampling_rate": round(rate, 6), "expected_batch_size": dp.batch_size, "steps": dp.steps,
            "records": records, "learning_rate": dp.learning_rate}


def _train_dp(model: Any, tokenizer: Any, pairs: Sequence[tuple[Any, str]], dp: Any,
              on_step: Any) -> dict[str, Any]:
    from fedgrpo.models.dp_sgd import train_supervised_dp
    from fedgrpo.privacy.secret import ClientSecret

    guarantee = dp_guarantee(dp, len(pairs))
    # Sampling and noise from fresh OS entropy, used once: nobody, the client included, can replay it.
    train_supervised_dp(model, tokenizer, pairs, steps=dp.steps, batch_size=dp.batch_size,
                        learning_rate=dp.learning_rate, clip_norm=dp.clip_norm,
                        noise=guarantee["noise_multiplier"], seed=ClientSecret.new().torch_seed("dp-sgd"),
                        on_step=on_step)
    return guarantee


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"
