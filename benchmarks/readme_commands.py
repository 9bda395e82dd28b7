"""The README's two commands, tried as a new user would: a fresh clone, an empty model cache (cold),
then the same again with the cache full (warm); wall time, machine and what each printed.

It clones the repository at HEAD (committed work only) into a temporary directory, runs
`bash scripts/bootstrap.sh && .venv/bin/fedgrpo run --output-dir ...` with an empty `FEDGRPO_CACHE`,
then again with a new output directory (the models cached), then the test command, and records:
wall seconds of each, the run's metrics (accuracy before and after per domain, gain, phase times),
the test record (`runs/test-record.json`: counts and wall time), the machine and its load.

Run: .venv/bin/python benchmarks/readme_commands.py [--skip-tests] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
ENV = {"FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}


def readme_commands() -> tuple[str, str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return tuple(line.split("  #")[0].strip() for line in lines[1:3])  # type: ignore[return-value]


def timed(command: str, cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return {"command": command, "exit_status": proc.returncode, "wall_time_s": round(time.perf_counter() - started, 1),
            "load_average_1m_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    run_cmd, test_cmd = readme_commands()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedgrpo-readme-"))
    work.mkdir(parents=True, exist_ok=True)
    clone = work / "fresh"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    env = {**os.environ, **ENV, "FEDGRPO_CACHE": str(work / "cache")}
    steps: dict[str, Any] = {}
    for name, output in (("cold", "runs/readme-cold"), ("warm", "runs/readme-warm")):
        steps[name] = timed(f"{run_cmd} --output-dir {output}", clone, env, work / f"{name}.log")
        metrics_file = clone / output / "metrics.json"
        if metrics_file.is_file():
            m = json.loads(metrics_file.read_text())
            steps[name]["metrics"] = {k: m[k] for k in ("accuracy_before", "accuracy_after", "mean_before",
                                                        "mean_after", "gain_points", "timings_s", "wall_time_s")}
        print(f"{name}: {steps[name]['wall_time_s']} s, exit {steps[name]['exit_status']}", flush=True)
    if not args.skip_tests:
        steps["tests"] = timed(test_cmd, clone, env, work / "tests.log")
        record = clone / "runs" / "test-record.json"
        if record.is_file():
            steps["tests"]["record"] = json.loads(record.read_text())
        print(f"tests: {steps['tests']['wall_time_s']} s, exit {steps['tests']['exit_status']}", flush=True)
    print(write_result("readme-commands", {"command": " ".join(argv), "clone_commit": commit, "metrics": steps}))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
