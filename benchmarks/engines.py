"""Engines side by side: wall time per optimizer step on embedded, Simulation and a loopback
Deployment, the bare Flower round trip with an empty handler, and the share of step time spent
waiting for rewards; with and without amortisation (TRL's `steps_per_generation`: one message per
selected expert per generation batch, spanning that many optimizer steps). The deployment's
SuperNodes are `fedgrpo supernode` (fast polling, one warm ClientApp process per SuperNode);
`--engines deployment-cold` runs them without the warm ClientApp (Flower's process per message) and
`deployment-plain` runs stock `flower-supernode`.

Everything runs in one invocation on the same machine, so the ratios compare like with like. The
default federation (4 clients, models from the cache: run `fedgrpo prepare` first) trains
`--steps` GRPO steps per engine; the deployment is `fedgrpo up`'s (TLS, SuperNode authentication).

Time per step is the mean over the steps after the first generation batch (steady state).

Run: .venv/bin/python benchmarks/engines.py [--steps 12] [--steps-per-generation 1 4] [--rounds 10]
         [--engines embedded simulation deployment deployment-cold deployment-plain]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "echo_app"))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE / "echo_app"), os.environ.get("PYTHONPATH")) if p)

from fedgrpo import load_config
from fedgrpo.engines.clientapp_worker import WARM_ENV
from fedgrpo.engines.local_deployment import run_local_deployment
from fedgrpo.engines.switch import run_engine


def train(engine: str, steps: int, spg: int, overlap: bool, work: Path) -> dict:
    config = load_config(overrides={"train_steps": steps, "save_steps": 10_000,
                                    "engine": "deployment" if engine.startswith("deployment") else engine,
                                    "steps_per_generation": spg, "overlap_rewards": "on" if overlap else "off"})
    out = work / f"{engine}-spg{spg}-overlap{int(overlap)}"
    out.mkdir(parents=True)
    started = time.perf_counter()
    if engine.startswith("deployment"):
        # "deployment-plain": stock `flower-supernode` instead of `fedgrpo supernode` (fast polling);
        # "deployment-cold": `fedgrpo supernode` without its warm ClientApp (a process per message).
        os.environ[WARM_ENV] = "0" if engine == "deployment-cold" else "1"
        try:
            metrics = run_local_deployment(config, out, log=lambda _: None,
                                           fast_supernodes=engine != "deployment-plain")
        finally:
            os.environ.pop(WARM_ENV, None)
    else:
        metrics = run_engine(config, out)
    steps_s = metrics["step_seconds"]
    # Steady state: the first generation batch pays one-off costs (TRL's warm-up; in Simulation,
    # Ray actors loading the experts they have not served yet), so it is reported apart.
    steady = steps_s[spg:]
    return {
        "engine": engine, "steps_per_generation": spg, "overlap_rewards": overlap, "steps": len(steps_s),
        "mean_step_s": statistics.fmean(steady),
        "median_step_s": statistics.median(steady),
        "first_batch_s": sum(steps_s[:spg]),
        "reward_wait_s": metrics["reward_wait_s"],
        "reward_wait_share": metrics["reward_wait_s"] / sum(steps_s),
        "score_messages": sum(1 for _ in metrics["bytes"]["per_step"]),
        # One reward round trip per generation batch: the median wall time of one after the first
        # (which pays one-off costs: in Simulation, Ray actors loading their experts). With
        # overlap_rewards, training waits only for part of it (reward_wait_s).
        "round_s": statistics.median(metrics["reward_round_trips_s"][1:] or metrics["reward_round_trips_s"]),
        "bytes": metrics["bytes"]["totals"],
        "mean_after": metrics["mean_after"],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def bare_round_trips(rounds: int, nodes: int, work: Path) -> dict:
    from echo_app import build_apps

    from fedgrpo.engines.deployment import run_app
    from fedgrpo.engines.local_deployment import LocalDeployment
    from fedgrpo.engines.simulation import simulate_apps

    out: dict = {}
    results: dict = {}
    server, client = build_apps(rounds, nodes, 2000, results)
    simulate_apps(server, client, num_supernodes=nodes)
    out["simulation"] = dict(results)
    app_dir = work / "echo-app"
    shutil.copytree(HERE / "echo_app", app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    result_file = work / "echo-deployment.json"
    text = (app_dir / "pyproject.toml").read_text()
    text = text.replace('out-file = ""', f'out-file = "{result_file}"').replace("rounds = 10", f"rounds = {rounds}")
    (app_dir / "pyproject.toml").write_text(text.replace("nodes = 4", f"nodes = {nodes}"))
    deployment = LocalDeployment(work / "echo-deployment", [f"partition-id={i} num-partitions={nodes}"
                                                              for i in range(nodes)])
    try:
        deployment.start()
        run_app(app_dir, deployment.address, deployment.root_certificates, home=deployment.home)
    finally:
        deployment.stop()
    import json

    out["deployment"] = json.loads(result_file.read_text())
    print("bare deployment:", {k: round(v["median_s"], 3) for k, v in out["deployment"].items()}, flush=True)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--steps-per-generation", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--engines", nargs="+", default=["embedded", "simulation", "deployment"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--overlap", type=int, nargs="+", default=[0], choices=[0, 1],
                        help="overlap_rewards off (0) and/or on (1); ratios are to embedded without overlap")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedgrpo-bench-") as tmp:
        work = Path(tmp)
        for spg in args.steps_per_generation:
            for overlap in args.overlap:
                for engine in args.engines:
                    row = train(engine, args.steps, spg, bool(overlap), work)
                    rows.append(row)
                    print(f"{engine:16s} spg={spg} overlap={overlap}: {row['mean_step_s']:.3f} s/step (median {row['median_step_s']:.3f}), "
                          f"waiting for rewards {100 * row['reward_wait_share']:.0f}%, wall {row['wall_s']} s",
                          flush=True)
        bare = bare_round_trips(args.rounds, 4, work)
    for spg in args.steps_per_generation:
        base = next(r for r in rows if r["engine"] == "embedded" and r["steps_per_generation"] == spg
                    and not r["overlap_rewards"])
        for r in rows:
            if r["steps_per_generation"] == spg:
                r["vs_embedded"] = r["mean_step_s"] / base["mean_step_s"]
                runtime = "simulation" if r["engine"] == "simulation" else "deployment"
                if r["engine"] != "embedded" and runtime in bare and not r["overlap_rewards"]:
                    # The same requests to the same experts: an embedded round is their scoring
                    # alone (one after another). FedGRPO's overhead is what a Flower round costs
                    # beyond the bare round trip of an empty handler plus that scoring.
                    floor = bare[runtime]["flower_transport"]["median_s"] + base["round_s"]
                    r["bare_plus_scoring_s"] = floor
                    r["over_bare_plus_scoring"] = r["round_s"] / floor - 1
    for runtime, by in bare.items():
        # FedGRPO's transport against Flower's own send_and_receive, both with an empty handler.
        print(f"bare {runtime}: FedGRPO transport {by['flower_transport']['median_s']:.3f} s vs Flower "
              f"send_and_receive {by['send_and_receive']['median_s']:.3f} s "
              f"({100 * (by['flower_transport']['median_s'] / by['send_and_receive']['median_s'] - 1):+.0f}%)")
    path = write_result("engines", {"args": vars(args), "runs": rows, "bare_round_trip": bare})
    for r in rows:
        extra = ""
        if "over_bare_plus_scoring" in r:
            extra = (f"; round {r['round_s']:.2f} s vs bare round trip + embedded scoring "
                     f"{r['bare_plus_scoring_s']:.2f} s ({100 * r['over_bare_plus_scoring']:+.0f}%)")
        print(f"{r['engine']:16s} spg={r['steps_per_generation']} overlap={int(r['overlap_rewards'])}: "
              f"{r['vs_embedded']:.2f}x embedded{extra}")
    print(f"Results: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
