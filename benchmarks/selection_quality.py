"""How well each selection method routes questions to their own domain's expert.

One calibration round on the default federation (models from the cache), then the share of training
questions whose M selected experts include the client of the question's domain, for: the confidence
graph with each encoder, random selection (the official code) and the domain oracle.

Run: .venv/bin/python benchmarks/selection_quality.py [--neighbours 20] [--experts-per-question 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

from fedgrpo import load_config
from fedgrpo.engines.experts import embedded_transport
from fedgrpo.models.embed import embed_questions
from fedgrpo.training.calibrate import calibrate, route
from fedgrpo.training.prepare import prepare


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--neighbours", type=int, default=20)
    parser.add_argument("--experts-per-question", type=int, default=2)
    args = parser.parse_args(argv)
    config = load_config(overrides={"neighbours": args.neighbours,
                                    "experts_per_question": args.experts_per_question})
    prepared = prepare(config)
    splits = prepared.splits
    domains = {s.expert_id: s.main_domain for s in splits.clients}
    transport = embedded_transport(prepared, Path(tempfile.mkdtemp(prefix="fedgrpo-selection-")))
    results = {}
    for encoder in ("server", "ngram"):
        started = time.perf_counter()
        aux_z = embed_questions([q.question for q in splits.aux], encoder, prepared.server_dir)
        pool_z = embed_questions([q.question for q in splits.pool], encoder, prepared.server_dir)
        graph, _ = calibrate(transport, splits.aux, aux_z)
        routing = route(list(splits.pool), pool_z, graph, experts_per_question=args.experts_per_question,
                        neighbours=args.neighbours, method="graph", expert_domains=domains)
        results[f"graph/{encoder}"] = {"hit_rate": routing.hit_rate, "seconds": round(time.perf_counter() - started, 2),
                                       "table": routing.table(splits.pool)}
    for method in ("random", "oracle"):
        routing = route(list(splits.pool), pool_z, graph, experts_per_question=args.experts_per_question,
                        neighbours=args.neighbours, method=method, expert_domains=domains)
        results[method] = {"hit_rate": routing.hit_rate, "table": routing.table(splits.pool)}
    transport.close()
    for name, r in results.items():
        print(f"{name:14s} hit rate {100 * r['hit_rate']:.1f}%")
    print(write_result("selection_quality", {"config": config.to_flat(), "metrics": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
