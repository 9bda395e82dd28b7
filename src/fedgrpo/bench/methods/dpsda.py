"""DPSDA-FL (Abacha et al. 2024): every client makes a DP synthetic set by Private Evolution
(`baselines.dpsda`) and uploads it; the server trains on the pooled sets, objective SFT (at its own
learning rate, `dpsda_sft_learning_rate`) or GRPO on their answers.

Its messages are computed in this process (no transport carries them). Each is counted twice, as
every method's are: its payload (`core.comm`'s byte model: texts, 4 B per count) and what it would
weigh on the wire as a JSON body (`pe_body_bytes`: the format of FedGRPO's expert service,
`transport.json_body`, so DPSDA-FL's wire bytes compare with FedGRPO's on the embedded engine)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from fedgrpo.bench.methods.base import Method, MethodResult
from fedgrpo.config import FedGRPOConfig, build_config
from fedgrpo.core.comm import payload_bytes
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.durable import write_json_atomic
from fedgrpo.progress import ProgressSink
from fedgrpo.transport.json_body import body


def run(config: FedGRPOConfig, method: Method, prepared: Any, out: Path, progress: ProgressSink) -> MethodResult:
    b = config.baselines
    pe = _private_evolution(config, prepared, out, progress)
    synthetic = [Question(**q) for q in pe["synthetic"]]
    facts = {k: pe[k] for k in ("epsilon", "delta", "noise_multiplier", "kept_per_round", "synthetic_domains",
                                "synthetic_per_client", "in_a_split")}
    facts |= {"rounds": b.dpsda_rounds, "candidates": b.dpsda_candidates, "foundation_pool": pe["foundation_pool"]}
    if method.objective == "sft":
        final_dir, curve = _server_sft(config, prepared, synthetic, out, progress)
    else:
        from fedgrpo.baselines.dpsda import pooled_for_grpo
        from fedgrpo.training.policy import train_policy

        grpo_config = build_config(cli_values={**config.to_flat(), "use_ground_truth": True})
        pool = pooled_for_grpo(synthetic)
        tuned = dataclasses.replace(prepared, config=grpo_config, splits=dataclasses.replace(prepared.splits, pool=pool))
        trained = train_policy(tuned, out, progress)
        final_dir, curve = trained.final_dir, trained.reward_curve
        facts["grpo_questions"] = len(pool)
    return MethodResult(final_dir, pe["messages"], curve, facts)


def _private_evolution(config: FedGRPOConfig, prepared: Any, out: Path, progress: ProgressSink) -> dict[str, Any]:
    """Every client's PE run, once (read back from ``private-evolution.json`` on resume)."""
    pe_file = out / "private-evolution.json"
    if pe_file.is_file():
        return json.loads(pe_file.read_text())
    from fedgrpo.baselines.dpsda import FoundationAPI, private_evolution

    splits = prepared.splits
    api = FoundationAPI.fresh(config.data, splits, FOUNDATION_POOL_PER_DOMAIN, seed=config.train.train_seed)
    runs = []
    with progress.phase("Private Evolution on every client", len(splits.clients)) as advance:
        for index, shard in enumerate(splits.clients):
            runs.append(private_evolution(config, shard.expert_id, shard.questions, api,
                                          seed=config.train.train_seed * 1_000 + index))
            advance(1)
    synthetic = [q for r in runs for q in r.synthetic]
    every_split = {i for ids in splits.all_question_ids().values() for i in ids}
    pe = {"synthetic": [{"question_id": q.question_id, "domain": q.domain, "generator": q.generator,
                         "question": q.question, "answer": q.answer,
                         "metadata": json.loads(json.dumps(q.metadata, default=str))} for q in synthetic],
          "messages": [["pe", rnd, r.expert_id, direction, payload_bytes(payload), pe_body_bytes(rnd, direction, payload)]
                       for r in runs for rnd, direction, payload in r.messages],
          "epsilon": {r.expert_id: r.epsilon for r in runs}, "delta": {r.expert_id: r.delta for r in runs},
          "noise_multiplier": {r.expert_id: r.noise_multiplier for r in runs},
          "kept_per_round": {r.expert_id: r.kept_per_round for r in runs},
          "synthetic_per_client": {r.expert_id: len(r.synthetic) for r in runs},
          "synthetic_domains": _counts(q.domain for q in synthetic),
          "in_a_split": sum(q.question_id in every_split for q in synthetic) / max(1, len(synthetic)),
          "foundation_pool": len(api.items)}
    write_json_atomic(pe_file, pe, indent=None)
    return pe


def pe_body_bytes(rnd: int, direction: str, payload: Any) -> int:
    """One Private Evolution message as a JSON body: the round and its candidates ([question, answer]
    texts, down), its noisy vote histogram (numbers, up) or its synthetic set (texts, up)."""
    if direction == "down":
        name = "candidates"
    else:
        name = "histogram" if all(isinstance(v, float) for v in payload) else "synthetic"
    return len(body({"round": rnd, name: list(payload)}))


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _server_sft(config: FedGRPOConfig, prepared: Any, synthetic: list[Question], out: Path,
                progress: ProgressSink) -> tuple[Path, list[dict[str, Any]]]:
    """The server fine-tunes on the pooled synthetic set: `dpsda_sft_epochs` epochs at
    `dpsda_sft_learning_rate` (chosen on validation; unset = sft_learning_rate), cosine decay."""
    final_dir = out / "final-model"
    curve_file = out / "sft-curve.json"
    if (final_dir / "config.json").is_file() and curve_file.is_file():
        return final_dir, json.loads(curve_file.read_text())
    from fedgrpo.models.load import load_model, supervised_pairs
    from fedgrpo.models.pretrain import train_supervised

    models, b = config.models, config.baselines
    model, tokenizer = load_model(prepared.server_dir)
    pairs = supervised_pairs(synthetic, PromptStyle.from_config(config.prompts))
    steps = b.dpsda_sft_epochs * math.ceil(len(pairs) / models.sft_batch_size)
    with progress.phase(f"server SFT on the synthetic set ({steps} steps)", steps) as advance:
        losses = train_supervised(model, tokenizer, pairs, steps=steps, batch_size=models.sft_batch_size,
                                  learning_rate=b.dpsda_sft_learning_rate or models.sft_learning_rate,
                                  seed=config.train.train_seed, on_step=lambda step, loss: advance(1))
    model.save_pretrained(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    curve = [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses) if (i + 1) % 10 == 0 or i + 1 == len(losses)]
    write_json_atomic(curve_file, curve, indent=None)
    return final_dir, curve


FOUNDATION_POOL_PER_DOMAIN = 3_000  # fresh items per domain the foundation model can write
KNOBS = ("dpsda_epsilon", "dpsda_delta", "dpsda_rounds", "dpsda_candidates", "dpsda_threshold",
         "dpsda_synthetic_size", "dpsda_sft_epochs", "dpsda_sft_learning_rate")
SFT = Method("dpsda_sft", "DPSDA-FL+SFT", run, objective="sft", answers="the clients", role="baseline", kind="dpsda",
             byte_ratio_goal=10, knobs=KNOBS,
             about="clients send DP synthetic sets (Private Evolution); the server fine-tunes on them")
GRPO = Method("dpsda_grpo", "DPSDA-FL+GRPO", run, objective="grpo", answers="the clients", role="baseline",
              kind="dpsda", byte_ratio_goal=10, knobs=KNOBS,
              about="clients send DP synthetic sets (Private Evolution); the server runs GRPO on their answers")
