"""`fedgrpo prepare`'s report as a results file: every model's greedy pass@1 per domain on the test
split (the server's also sampled), the GRPO signal, each domain's edge status, the diagnostics, and,
with DP-trained experts, each client's guarantee and its expert's accuracy without DP.

Run: .venv/bin/python benchmarks/prepare_report.py [--tag NAME] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import write_result

from fedgrpo import load_config
from fedgrpo.models.load import PRETRAIN_LOG
from fedgrpo.training.prepare import prepare, report_prepared


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="default")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = dict(a.split("=", 1) for a in args.set)
    config = load_config(overrides=overrides)
    started = time.perf_counter()
    prepared = prepare(config, nonprivate=True)
    report = report_prepared(prepared, prepare_seconds=time.perf_counter() - started)
    log_file = prepared.server_dir / PRETRAIN_LOG
    pretrain = json.loads(log_file.read_text()) if log_file.is_file() else None
    print(write_result(f"prepare-{args.tag}", {
        "command": " ".join(argv), "overrides": overrides, "config": config.to_flat(),
        "metrics": {**report.to_dict(), "pretrain": {k: pretrain[k] for k in ("steps", "reached")} if pretrain else None}}))


if __name__ == "__main__":
    main(sys.argv[1:])
