"""The three engines give the same run, and a run survives a lost expert.

One 3-client micro federation, 2 GRPO steps, run on the embedded engine, on Flower's Simulation
runtime (3 virtual SuperNodes) and on a real loopback deployment (a SuperLink and 3 SuperNodes on
127.0.0.1 with TLS and SuperNode authentication, each SuperNode forwarding to its site's expert
service). Parity: identical rewards, final weights (so identical advantages), accuracy and payload
bytes per step. Faults: an expert that breaks after calibration (embedded) and a SuperNode stopped
mid-run (deployment) both end in a finished run whose report names the lost expert and counts the
re-routed questions. Every Flower launch here costs 30-60 s, so there are three, shared by fixtures.

Run: pytest -m flower tests/integration/test_engines.py
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedgrpo.config import load_config
from fedgrpo.engines.experts import make_local_expert
from fedgrpo.engines.local_deployment import group_alive, run_local_deployment
from fedgrpo.engines.run import Connector, run
from fedgrpo.engines.switch import run_engine
from fedgrpo.models.load import load_model
from fedgrpo.transport.embedded import EmbeddedTransport

from .conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.flower]

# One message per step (not the default 4 steps per generation): two scoring rounds in two steps, so
# parity covers consecutive rounds and a fault in the first is re-routed in the second. Overlap is
# pinned off (auto would turn it on for the deployment only): the same schedule on every engine.
ENGINE_OVERRIDES = {**TINY_OVERRIDES, "num_clients": 3, "neighbours": 4, "train_steps": 2, "prompts_per_step": 4,
                    "save_steps": 1, "learning_rate": 1e-3, "steps_per_generation": 1, "overlap_rewards": "off"}


@pytest.fixture(scope="module")
def engine_config(cache_dir):
    return load_config(overrides={**ENGINE_OVERRIDES, "cache_dir": str(cache_dir)})


def _on(config, engine: str):
    return replace(config, engine=replace(config.engine, engine=engine))


@pytest.fixture(scope="module")
def embedded(engine_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    return out, run_engine(_on(engine_config, "embedded"), out)


@pytest.fixture(scope="module")
def simulation(engine_config, embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("simulation")
    return out, run_engine(_on(engine_config, "simulation"), out)


@pytest.fixture(scope="module")
def deployment(engine_config, embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("deployment")
    seen = {}
    metrics = run_local_deployment(_on(engine_config, "deployment"), out, log=lambda _: None,
                                   on_started=lambda d: seen.setdefault("deployment", d))
    return out, metrics, seen["deployment"]


def _weights(out: Path) -> list[torch.Tensor]:
    model, _ = load_model(out / "final-model")
    return list(model.state_dict().values())


def assert_same_run(a, b):
    (out_a, m_a), (out_b, m_b) = a, b
    # A deployment's metrics come back from metrics.json: compare both as JSON (integer keys -> text).
    m_a, m_b = json.loads(json.dumps(m_a)), json.loads(json.dumps(m_b))
    # Same rewards at every step (TRL's logged mean and std of the federated reward)...
    assert m_a["reward_curve"] == m_b["reward_curve"]
    # ...and the same trained weights: the advantages that drove the updates were identical.
    assert all(torch.equal(x, y) for x, y in zip(_weights(out_a), _weights(out_b), strict=True))
    assert m_a["accuracy_after"] == m_b["accuracy_after"]
    # The same payload bytes per step, per expert and in total, calibration included, and the same
    # messages (what each scorer read, texts once); wire bytes are each engine's own serialization.
    payload = ("totals", "per_expert", "per_step", "stale_replies", "refused_replies", "scoring_shape")
    assert {k: m_a["bytes"][k] for k in payload} == {k: m_b["bytes"][k] for k in payload}
    assert m_a["bytes"]["wire_totals"]["unrecorded"] == m_b["bytes"]["wire_totals"]["unrecorded"] == 0
    assert m_a["routing"]["table"] == m_b["routing"]["table"]
    assert m_b["failures"] == {} and m_b["lost_experts"] == {}


def test_simulation_gives_the_embedded_run(embedded, simulation):
    assert simulation[1]["engine"] == "simulation"
    assert_same_run(embedded, simulation)


def test_a_loopback_deployment_gives_the_embedded_run(embedded, deployment):
    out, metrics, _ = deployment
    assert metrics["engine"] == "deployment"
    assert_same_run(embedded, (out, metrics))


@pytest.fixture(scope="module")
def overlapped(engine_config, tmp_path_factory):
    config = replace(engine_config, train=replace(engine_config.train, overlap_rewards="on"))
    runs = {}
    for engine in ("embedded", "simulation"):
        out = tmp_path_factory.mktemp(f"overlap-{engine}")
        runs[engine] = (out, run_engine(_on(config, engine), out))
    return runs


def test_with_overlap_simulation_still_gives_the_embedded_run(overlapped):
    # overlap_rewards sends every round trip from a background thread (through Flower's grid on
    # Simulation) while the policy samples and trains: the engines must still agree bit for bit.
    out, metrics = overlapped["simulation"]
    assert metrics["overlap_rewards"] and metrics["engine"] == "simulation"
    assert_same_run(overlapped["embedded"], (out, metrics))


def test_the_deployment_leaves_no_process_running(deployment):
    out, _, local = deployment
    assert len(local.processes) == 1 + 3 + 3  # SuperLink, 3 expert services, 3 SuperNodes
    assert all(p.poll() is not None for p in local.processes)
    assert not any(group_alive(p.pid) for p in local.processes)
    # Nor anything they started (SuperExec, ServerApp, ClientApps, a managed SuperLink): every
    # descendant inherits the deployment's private FLWR_HOME.
    assert _processes_with_env(f"FLWR_HOME={local.home}") == []


def test_the_deployment_served_its_clientapps_from_warm_workers(deployment):
    out, _, _ = deployment
    logs = "".join(p.read_text(errors="replace") for p in (out / "deployment" / "logs").glob("supernode-*.log"))
    done = [line for line in logs.splitlines() if "fedgrpo warm ClientApp: message" in line]
    # Per SuperNode at least a hello and a calibration (scoring depends on routing); a message that
    # came before its worker was listening would have run the one-shot way, so allow for one each.
    assert len(done) >= 3 * 2 - 3
    assert all(line.endswith("(exit code 0)") for line in done)


def _processes_with_env(entry: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


# --- faults ---------------------------------------------------------------------------------------

class GoesOffline:
    """Wraps every expert; the first one asked to score goes offline for good (it calibrated fine)."""

    def __init__(self, inner, expert_id, state):
        self.inner, self.expert_id, self.state = inner, expert_id, state

    def hello(self):
        return self.inner.hello()

    def calibrate(self, request):
        return self.inner.calibrate(request)

    def score(self, request):
        with self.state["lock"]:
            self.state.setdefault("victim", self.expert_id)
        if self.state["victim"] == self.expert_id:
            raise ConnectionError("site went offline")
        return self.inner.score(request)


@pytest.mark.parametrize("overlap", [False, True], ids=["synchronous", "overlap_rewards"])
def test_an_expert_lost_after_calibration_is_rerouted_and_reported(engine_config, embedded, tmp_path, overlap):
    import threading

    state = {"lock": threading.Lock()}

    def factory(prepared, out):
        config = prepared.config
        return EmbeddedTransport({
            s.expert_id: GoesOffline(make_local_expert(config, s.expert_id, s.questions,
                                                       prepared.expert_dirs[s.expert_id]), s.expert_id, state)
            for s in prepared.splits.clients})

    config = replace(engine_config, train=replace(engine_config.train, overlap_rewards="on" if overlap else "off"))
    metrics = run(_on(config, "embedded"), tmp_path, connector=Connector(factory)).to_dict()
    lost = state["victim"]
    assert metrics["lost_experts"] == {lost: "ConnectionError: site went offline"}
    assert metrics["failures"] == {lost: 1}  # asked once; later steps go straight to substitutes
    assert metrics["rerouted_questions"][lost] > 0
    # Training went on with whole federated groups: every step has a reward, none missing.
    assert [p["step"] for p in metrics["reward_curve"]] == [1, 2]
    assert all(p["reward"] is not None for p in metrics["reward_curve"])


def test_a_supernode_stopped_mid_run_is_rerouted_and_reported(engine_config, embedded, tmp_path):
    config = replace(_on(engine_config, "deployment"),
                     train=replace(engine_config.train, train_steps=3),
                     federation=replace(engine_config.federation, expert_timeout_s=20.0))
    victim = {}

    def stop_a_site(local):
        # Once the first training step's scores are in, stop the SuperNode of the expert that the
        # routing selects most often (SuperNode i serves client-i).
        traffic = tmp_path / "traffic.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if traffic.is_file() and any(json.loads(line)[0] == "score" for line in traffic.read_text().splitlines()):
                break
            time.sleep(0.2)
        routing = json.loads((tmp_path / "routing.json").read_text())["experts"]
        counts = {}
        for experts in routing.values():
            for e in experts:
                counts[e] = counts.get(e, 0) + 1
        victim["id"] = max(sorted(counts), key=counts.get)
        local.stop_process(f"supernode-{victim['id'].split('-')[1]}")

    metrics = run_local_deployment(config, tmp_path, log=lambda _: None, on_started=stop_a_site)
    lost = victim["id"]
    # The SuperLink notices the missing heartbeat and answers for the node, or the deadline passes.
    assert list(metrics["lost_experts"]) == [lost]
    assert any(why in metrics["lost_experts"][lost] for why in ("Node Unavailable", "timed out"))
    assert metrics["failures"] == {lost: 1}
    assert metrics["rerouted_questions"][lost] > 0
    assert [p["step"] for p in metrics["reward_curve"]] == [1, 2, 3]
