"""What full-text candidates weigh compressed, with and without a preset dictionary, and what 8-bit
rewards lose (issue 22): the figures behind `core.packing`'s choices.

Candidates are real: the default config's server policy (the cached base, and any trained model
given with --model) samples M*G candidates per training question at the training temperature, and
they are grouped into messages as a run groups them (one expert's questions of one generation batch:
`--per-message` questions of one domain). Per message it measures the candidates as the JSON list
`core.packing.compress_texts` compresses: raw, zlib at levels 6 and 9, zlib 9 with a preset
dictionary of the prompt style's fixed strings, and with one of the auxiliary set's answers in the
style's layout (public to server and clients alike); zstd where installed. It also reports what the
answer form sends instead (distinct final answers per item, their bytes) and the 8-bit quantisation
error of real-valued rewards (bounded Laplace releases at epsilon 1 and 4, and uniform values).

Run: .venv/bin/python benchmarks/compression.py [--questions 256] [--model DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from common import write_result

from fedgrpo import load_config
from fedgrpo.core.packing import QUANTISATION_ERROR, distinct_answers, pack_rewards, unpack_rewards
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.models.generate import generate_completions
from fedgrpo.models.load import load_model
from fedgrpo.privacy.mechanisms import BoundedLaplace
from fedgrpo.training.prepare import prepare


def _json_list(texts: list[str]) -> bytes:
    return json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _zlib(raw: bytes, level: int, zdict: bytes | None = None) -> int:
    packer = zlib.compressobj(level, zdict=zdict) if zdict else zlib.compressobj(level)
    return len(packer.compress(raw) + packer.flush())


def _zstd(raw: bytes) -> int | None:
    try:
        import zstandard
    except ImportError:
        return None
    return len(zstandard.ZstdCompressor(level=19).compress(raw))


def measure_messages(messages: list[list[list[str]]], dictionaries: dict[str, bytes]) -> dict[str, Any]:
    """Bytes per scheme summed over messages (each message: items, each a list of candidate texts)."""
    totals: dict[str, int] = {"raw": 0, "zlib6": 0, "zlib9": 0, **{f"zlib9+{name}": 0 for name in dictionaries}}
    zstd_total: int | None = 0
    for items in messages:
        raw = _json_list([c for item in items for c in item])
        totals["raw"] += len(raw)
        totals["zlib6"] += _zlib(raw, 6)
        totals["zlib9"] += _zlib(raw, 9)
        for name, zdict in dictionaries.items():
            totals[f"zlib9+{name}"] += _zlib(raw, 9, zdict)
        z = _zstd(raw)
        zstd_total = None if z is None or zstd_total is None else zstd_total + z
    out: dict[str, Any] = {"bytes": totals, "zstd19": zstd_total if zstd_total is not None else "not installed"}
    out["ratio_to_raw"] = {k: round(v / totals["raw"], 4) for k, v in totals.items()}
    out["dictionary_gain_over_zlib9"] = {name: round(1 - totals[f"zlib9+{name}"] / totals["zlib9"], 4)
                                         for name in dictionaries}
    return out


def answer_form(messages: list[list[list[str]]], style: PromptStyle) -> dict[str, Any]:
    """What the answer form sends of the same candidates: distinct final answers per item."""
    items = [item for m in messages for item in m]
    distinct = [distinct_answers([style.extract(c) for c in item])[0] for item in items]
    answers = [a for d in distinct for a in d]
    return {"items": len(items), "candidates_per_item": float(np.mean([len(i) for i in items])),
            "distinct_answers_per_item": round(float(np.mean([len(d) for d in distinct])), 3),
            "answer_bytes_mean": round(float(np.mean([len(a.encode()) for a in answers])), 3),
            "candidate_bytes_mean": round(float(np.mean([len(c.encode()) for i in items for c in i])), 3),
            "answers_json_bytes": sum(len(_json_list(list(d))) for d in distinct)}


def quantisation(seed: int = 0, n: int = 100_000) -> dict[str, Any]:
    """Q8's error on real-valued rewards: bounded Laplace releases of 0/1 rewards, and uniform values."""
    rng = np.random.default_rng(seed)
    cases = {"uniform": rng.uniform(0.0, 1.0, n)}
    for epsilon in (1.0, 4.0):
        clean = rng.integers(0, 2, n).astype(float)
        cases[f"laplace_eps{epsilon:g}"] = BoundedLaplace(epsilon).release(clean, rng.uniform(0.0, 1.0, (n, 2)))
    out = {}
    for name, values in cases.items():
        error = np.abs(unpack_rewards(pack_rewards(values), n) - values)
        out[name] = {"max": float(error.max()), "rms": float(np.sqrt(np.mean(error ** 2))),
                     "mean": float(error.mean())}
    return {"bound": QUANTISATION_ERROR, "cases": out}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--per-message", type=int, default=16, help="questions per message (the default run: 16)")
    parser.add_argument("--model", action="append", default=[], help="a trained policy to sample from as well")
    args = parser.parse_args(argv)
    config = load_config()
    style = PromptStyle.from_config(config.prompts)
    prepared = prepare(config, experts=False)
    pool = list(prepared.splits.pool)[: args.questions]
    group = config.federation.experts_per_question * config.federation.generations_per_expert
    aux_targets = [style.target(q.answer or "") for q in prepared.splits.aux]
    dictionaries = {"style": b"<answer></answer><think></think>\\boxed{",
                    "aux_answers": "".join(aux_targets).encode("utf-8")[-32768:]}
    results = {}
    for name, model_dir in [("base", prepared.server_dir)] + [(Path(m).name, Path(m)) for m in args.model]:
        model, tokenizer = load_model(Path(model_dir))
        samples = generate_completions(model, tokenizer, [style.prompt(q.question) for q in pool],
                                       max_new_tokens=config.train.max_completion_length, num_samples=group,
                                       temperature=config.train.temperature, seed=config.train.train_seed)
        by_domain: dict[str, list[list[str]]] = {}
        for q, candidates in zip(pool, samples):
            by_domain.setdefault(q.domain, []).append(candidates)
        messages = [items[i:i + args.per_message] for items in by_domain.values()
                    for i in range(0, len(items), args.per_message)]
        results[name] = {"model": str(model_dir), "messages": len(messages),
                         "texts": measure_messages(messages, dictionaries), "answers": answer_form(messages, style),
                         "example_candidates": messages[0][0][:4]}
    payload = {"questions": len(pool), "candidates_per_question": group, "per_message": args.per_message,
               "dictionaries": {k: len(v) for k, v in dictionaries.items()}, "models": results,
               "quantisation": quantisation()}
    path = write_result("compression", payload)
    print(json.dumps({k: {"texts": v["texts"], "answers": v["answers"]} for k, v in results.items()}, indent=1))
    print(json.dumps(payload["quantisation"], indent=1))
    print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
