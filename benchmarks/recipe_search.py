"""Search for a tiny recipe whose base sits at the edge of competence and gains from GRPO (issue 10).

One call = one recipe: prepare the base (cached), measure it per domain (greedy pass@1, sampled
accuracy, pass@k, GRPO signal on the training pool), optionally the experts, then run GRPO with
ground-truth rewards (and/or expert rewards) and measure the held-out gain per domain.

Run: python benchmarks/recipe_search.py --tag NAME [--experts] [--modes ground_truth experts]
                                          --set key=value ...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import write_result

from fedgrpo import load_config
from fedgrpo.data.prompts import PREFILL
from fedgrpo.engines.experts import embedded_transport
from fedgrpo.engines.run import Connector, run
from fedgrpo.models.generate import generate_completions
from fedgrpo.models.load import load_model
from fedgrpo.training.evaluate import correctness, evaluate_model
from fedgrpo.training.prepare import prepare


class PrintProgress:
    """Prints each phase's start and end with its wall time (a log file, not a progress bar)."""

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        started = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {description} ...", flush=True)
        yield lambda n=1: None
        print(f"[{time.strftime('%H:%M:%S')}] {description}: {time.perf_counter() - started:.1f} s", flush=True)

    def log(self, message: str) -> None:
        print(message, flush=True)


def sampled_stats(model: Any, tokenizer: Any, questions: list[Any], k: int, seed: int) -> dict[str, float]:
    """Greedy pass@1, sampled accuracy, pass@k and mixed share over `questions`."""
    prompts = [PREFILL.prompt(q.question) for q in questions]
    greedy = generate_completions(model, tokenizer, prompts, max_new_tokens=24, batch_size=256)
    drawn = generate_completions(model, tokenizer, prompts, max_new_tokens=24, num_samples=k,
                                 temperature=1.0, batch_size=256, seed=seed)
    g = [row[0] for row in correctness(questions, greedy, PREFILL)]
    bits = correctness(questions, drawn, PREFILL)
    n = len(questions)
    return {
        "n": n,
        "greedy": sum(g) / n,
        "sampled": sum(map(sum, bits)) / (n * k),
        f"pass@{k}": sum(any(b) for b in bits) / n,
        "mixed": sum(0 < sum(b) < k for b in bits) / n,
    }


def greedy_accuracy(model: Any, tokenizer: Any, eval_sets: dict[str, Any]) -> dict[str, float]:
    """Held-out greedy pass@1 per domain (the project's evaluation, without samples)."""
    scores = evaluate_model(model, tokenizer, eval_sets, style=PREFILL, samples=0, temperature=1.0,
                            max_new_tokens=24, batch_size=256, seed=0)
    return {d: score.pass_at_1 for d, score in scores.items()}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--modes", nargs="*", default=["ground_truth"], choices=["ground_truth", "experts"])
    parser.add_argument("--experts", action="store_true", help="train and evaluate the experts too")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--curve", nargs="*", type=int, default=[],
                        help="also evaluate the GRPO checkpoints at these steps (multiples of save_steps)")
    parser.add_argument("--probe", type=int, default=200, help="items per domain for the base's stats")
    args = parser.parse_args(argv)
    shared = dict(a.split("=", 1) for a in args.set)
    config = load_config(overrides=shared)
    result: dict[str, Any] = {"tag": args.tag, "overrides": shared, "config": config.to_flat()}

    t = time.perf_counter()
    need_experts = args.experts or "experts" in args.modes
    prepared = prepare(config, PrintProgress(), experts=need_experts)
    result["prepare_s"] = round(time.perf_counter() - t, 1)
    result["cache_hits"] = prepared.cache_hits
    log = prepared.server_dir / "fedgrpo-pretrain-log.json"
    if log.is_file():
        import json

        pre = json.loads(log.read_text())
        result["pretrain"] = {"steps": pre["steps"], "reached": pre["reached"],
                              "last_check": pre["checks"][-1]}
        print(f"pre-training: {pre['steps']} steps, reached {pre['reached']}")

    model, tok = load_model(prepared.server_dir)
    splits = prepared.splits
    base: dict[str, Any] = {}
    for d, qs in splits.eval.items():
        base[d] = {"eval": sampled_stats(model, tok, list(qs[: args.probe]), args.k, 0)}
        pool_d = [q for q in splits.pool if q.domain == d][: args.probe]
        base[d]["pool"] = sampled_stats(model, tok, pool_d, args.k, 1)
    result["base"] = base
    for d, s in base.items():
        e, p = s["eval"], s["pool"]
        print(f"base {d:14s} greedy {100*e['greedy']:5.1f} sampled {100*e['sampled']:5.1f} "
              f"pass@{args.k} {100*e[f'pass@{args.k}']:5.1f} mixed(pool) {100*p['mixed']:5.1f}")

    if need_experts:
        experts: dict[str, Any] = {}
        for shard in splits.clients:
            m, tk = load_model(prepared.expert_dirs[shard.expert_id])
            d = shard.main_domain
            acc = greedy_accuracy(m, tk, {d: splits.eval[d]})[d]
            experts[shard.expert_id] = {"domain": d, "own_greedy": acc}
            print(f"expert {shard.expert_id} ({d}): {100*acc:.1f}")
        result["experts"] = experts

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedgrpo-recipe-") as tmp:
        for mode in args.modes:
            cfg = load_config(overrides={**shared, "use_ground_truth": str(mode == "ground_truth").lower()})
            out = Path(tmp) / mode
            out.mkdir()
            connector = Connector(embedded_transport, builds_expert_models=(mode == "experts"))
            metrics = run(cfg, out, PrintProgress(), connector=connector).to_dict()
            before = {d: s["pass_at_1"] for d, s in metrics["accuracy_before"].items()}
            after = {d: s["pass_at_1"] for d, s in metrics["accuracy_after"].items()}
            runs[mode] = {
                "before": before, "after": after,
                "gain_per_domain": {d: round(100 * (after[d] - before[d]), 2) for d in before},
                "gain_points": metrics["gain_points"], "wall_time_s": metrics["wall_time_s"],
                "timings_s": metrics["timings_s"],
                "s_per_step": (sum(metrics["step_seconds"][1:]) / max(1, len(metrics["step_seconds"]) - 1)),
                "reward_curve": metrics["reward_curve"][:: max(1, len(metrics["reward_curve"]) // 30)],
            }
            curve = {}
            for step in args.curve:
                ckpt = out / "checkpoints" / f"checkpoint-{step}"
                if ckpt.is_dir():
                    m, tk = load_model(ckpt)
                    curve[step] = greedy_accuracy(m, tk, splits.eval)
                    mean = sum(curve[step].values()) / len(curve[step])
                    print(f"{mode} step {step}: mean {100 * mean:.1f} gain "
                          f"{100 * (mean - sum(before.values()) / len(before)):+.1f} "
                          + " ".join(f"{d} {100 * (v - before[d]):+.1f}" for d, v in curve[step].items()))
            runs[mode]["curve"] = curve
            r = runs[mode]
            print(f"{mode}: gain {r['gain_points']:+.2f} per domain {r['gain_per_domain']} "
                  f"wall {r['wall_time_s']} s, {r['s_per_step']:.3f} s/step")
    result["runs"] = runs
    if "ground_truth" in runs and "experts" in runs and runs["ground_truth"]["gain_points"] > 0:
        result["no_answer_share"] = runs["experts"]["gain_points"] / runs["ground_truth"]["gain_points"]
    print(write_result(f"recipe-{args.tag}", result))


if __name__ == "__main__":
    main(sys.argv[1:])
