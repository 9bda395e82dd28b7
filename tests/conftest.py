"""Session-wide: every run of the test command records how many tests ran, how they ended and how
long they took, with the machine, in runs/test-record.json (README figures about the test suite are
rendered from a copy of it in benchmarks/results)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

_STARTED = time.time()
_OUTCOMES: dict[str, int] = {}


def pytest_runtest_logreport(report):  # noqa: ANN001, ANN201 - pytest's hook signature
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[report.outcome] = _OUTCOMES.get(report.outcome, 0) + 1


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001, ANN201
    out = Path(__file__).resolve().parents[1] / "runs" / "test-record.json"
    try:
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_time_s": round(time.time() - _STARTED, 1),
            "outcomes": _OUTCOMES, "exit_status": int(exitstatus), "args": session.config.invocation_params.args,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}", "load_average_1m": os.getloadavg()[0],
        }, indent=1))
    except OSError:
        pass  # a read-only checkout: the record is a convenience, never a reason to fail
