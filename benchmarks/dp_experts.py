"""DP-trained experts: each client's own-domain accuracy under DP-SGD recipes, on validation (issue 19).

A recipe is a named set of overrides of the DP knobs (``expert_epsilon``, ``expert_dp_batch_size``,
``expert_dp_learning_rate``, ``expert_clip_norm``, ``expert_steps``). For each recipe and pipeline
seed the script builds (or reads from the cache) every client's DP expert and reports its greedy
pass@1 in its own domain on the validation split (where the recipe is chosen) and the test split,
beside the same expert trained without DP, with its guarantee (epsilon, noise multiplier, sampling
rate, steps).

Run: .venv/bin/python benchmarks/dp_experts.py [--pipeline-seeds 0] [--set key=value ...]
                                               --recipe NAME:key=value,key=value ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from common import write_result
from gain import parse_variants, pipeline_overrides

from fedgrpo import load_config
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.models.load import load_model, read_guarantee
from fedgrpo.training.evaluate import evaluate_model
from fedgrpo.training.prepare import prepare


def own_domain_scores(prepared: Any, dirs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per expert: greedy pass@1 on its own domain's validation and test items."""
    config, splits = prepared.config, prepared.splits
    style = PromptStyle.from_config(config.prompts)
    out = {}
    for shard in splits.clients:
        own = shard.main_domain
        model, tokenizer = load_model(dirs[shard.expert_id])
        scores = {}
        for split, sets in (("val", splits.val), ("test", splits.eval)):
            s = evaluate_model(model, tokenizer, {own: sets[own]}, style=style, samples=0, temperature=1.0,
                               max_new_tokens=config.evaluation.max_new_tokens,
                               batch_size=config.evaluation.eval_batch_size, seed=0)
            scores[split] = s[own].pass_at_1
        out[shard.expert_id] = {"domain": own, **scores}
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    args = parser.parse_args(argv)
    shared = dict(a.split("=", 1) for a in args.set)
    recipes = parse_variants(args.recipe)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in recipes}
    for seed in args.pipeline_seeds:
        for name, extra in recipes.items():
            started = time.perf_counter()
            config = load_config(overrides={**shared, **pipeline_overrides(seed), **extra})
            prepared = prepare(config, nonprivate=True)
            dp = own_domain_scores(prepared, prepared.expert_dirs)
            plain = own_domain_scores(prepared, prepared.nonprivate_dirs or prepared.expert_dirs)
            row = {"seed": seed, "overrides": extra, "seconds": round(time.perf_counter() - started, 1),
                   "experts": {e: {**dp[e], "val_without_dp": plain[e]["val"], "test_without_dp": plain[e]["test"],
                                   "guarantee": read_guarantee(prepared.expert_dirs[e])} for e in dp}}
            row["mean_val"] = statistics.fmean(x["val"] for x in row["experts"].values())
            row["mean_val_without_dp"] = statistics.fmean(x["val_without_dp"] for x in row["experts"].values())
            results[name].append(row)
            print(f"seed {seed} {name}: own-domain val {100 * row['mean_val']:.1f} (without DP "
                  f"{100 * row['mean_val_without_dp']:.1f}); " + ", ".join(
                      f"{e} {100 * x['val']:.1f}/{100 * x['val_without_dp']:.1f}" for e, x in row["experts"].items()),
                  flush=True)
    summary = {name: {"mean_val": statistics.fmean(r["mean_val"] for r in rows),
                      "mean_val_without_dp": statistics.fmean(r["mean_val_without_dp"] for r in rows)}
               for name, rows in results.items()}
    best = max(summary, key=lambda n: summary[n]["mean_val"])
    print(f"best on validation: {best} ({100 * summary[best]['mean_val']:.1f})")
    print(write_result("dp-experts", {"overrides": shared, "pipeline_seeds": args.pipeline_seeds, "recipes": recipes,
                                      "metrics": {"summary": summary, "best_on_validation": best, "runs": results}}))


if __name__ == "__main__":
    main(sys.argv[1:])
