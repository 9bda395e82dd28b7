"""FedPETuning's federation: Flower's FedAvg strategy over LoRA adapters, on every engine.

- Simulation (and Deployment through the same ServerApp): `FedAvg.start` on Flower's grid, wrapped in
  `CountingGrid`, which records two sizes of every message both ways: its records' payload (Flower's
  own ``count_bytes``: the array bytes and their keys) and the message serialized as Flower sends it
  (`transport.flower_records.message_bytes`: metadata, records, array chunks).
- Embedded: the same rounds in this process. Every message is a real Flower ``Message`` (the train
  message as ``FedAvg.configure_train`` builds it, each client's reply) and the average is Flower's
  ``FedAvg.aggregate_train`` on the replies (public API; what ``FedAvg.start`` calls), so both engines
  average with one piece of code, Flower's, and count bytes the same way.

Each round's global adapter is checkpointed (``out/fedavg/round-<r>.npz``, written atomically), so a
killed run resumes at the next round with the seeds an uninterrupted run would have used.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedgrpo.config import FedGRPOConfig
from fedgrpo.durable import write_json_atomic
from fedgrpo.progress import NullProgress, ProgressSink
from fedgrpo.transport.flower_records import message_bytes

WEIGHT_KEY = "num-examples"  # FedAvg's default weighting key
CLIENT_KEY = "client-index"  # a simulated client names itself in its reply's metrics

# (arrays, round_index, client_index) -> (new arrays, weight, metrics); one per client.
LocalUpdate = Callable[[Mapping[str, np.ndarray], int, int], tuple[dict[str, np.ndarray], int, dict[str, float]]]


def record_bytes(content: RecordDict) -> int:
    """A message's payload as Flower counts it: every record's ``count_bytes``."""
    return sum(record.count_bytes() for record in content.values())


@dataclass
class FedAvgLog:
    """Every message of a FedAvg run: (round, client index, direction, payload bytes, wire bytes);
    wire bytes None in a checkpoint written before they were recorded."""

    messages: list[tuple[int, int, str, int, int | None]] = field(default_factory=list)
    round_metrics: list[dict[str, Any]] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        out = {"down": 0, "up": 0}
        for _, _, direction, size, _ in self.messages:
            out[direction] += size
        return out


def _arrays(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def _state(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def reply_content(state: Mapping[str, np.ndarray], weight: int, metrics: Mapping[str, float]) -> RecordDict:
    """A client's train reply, as FedAvg expects it: its arrays and a MetricRecord with its weight."""
    return RecordDict({"arrays": _arrays(state),
                       "metrics": MetricRecord({WEIGHT_KEY: int(weight), **{k: float(v) for k, v in metrics.items()}})})


def _reply(content: RecordDict, node_id: int, server_round: int) -> Message:
    metadata = Metadata(run_id=0, message_id=f"{server_round}-{node_id}", src_node_id=node_id, dst_node_id=0,
                        reply_to_message_id="", group_id=str(server_round), created_at=time.time(),
                        ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(metadata=metadata, content=content)


def _train_message(arrays: ArrayRecord, node_id: int, server_round: int) -> Message:
    """The train message FedAvg sends a node (`FedAvg.configure_train`: its arrays and a config record
    with the round), with this process's metadata."""
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
    metadata = Metadata(run_id=0, message_id="", src_node_id=0, dst_node_id=node_id, reply_to_message_id="",
                        group_id="", created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(metadata=metadata, content=content)


def fedavg_mean(replies: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Flower's FedAvg average of (arrays, weight) replies (`FedAvg.aggregate_train`)."""
    messages = [_reply(reply_content(state, weight, {}), node, 1) for node, (state, weight) in enumerate(replies)]
    arrays, _ = _strategy(len(messages)).aggregate_train(1, messages)
    assert arrays is not None
    return _state(arrays)


def _strategy(clients: int) -> FedAvg:
    """FedPETuning's FedAvg: every client every round (fraction 1), no federated evaluation (the server
    evaluates the merged model on held-out sets)."""
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)  # "fraction_evaluate is 0" and per-round logs
    return FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)


class Checkpoints:
    """The global adapter after each finished round, in ``<dir>/round-<r>.npz`` plus the log so far."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def last(self) -> tuple[int, dict[str, np.ndarray] | None, FedAvgLog]:
        rounds = sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("round-*.npz"))
        if not rounds:
            return 0, None, FedAvgLog()
        r = rounds[-1]
        with np.load(self.directory / f"round-{r}.npz") as data:
            state = {k: data[k] for k in data.files}
        log = json.loads((self.directory / f"round-{r}.json").read_text())
        messages = [(*m, None) if len(m) == 4 else tuple(m) for m in log["messages"]]  # older: no wire bytes
        return r, state, FedAvgLog(messages, log["round_metrics"])

    def save(self, r: int, state: Mapping[str, np.ndarray], log: FedAvgLog) -> None:
        # The log first, the arrays last: a round counts as done only once its .npz exists.
        write_json_atomic(self.directory / f"round-{r}.json",
                          {"messages": log.messages, "round_metrics": log.round_metrics}, indent=None)
        tmp = self.directory / f"round-{r}.tmp.npz"
        np.savez(tmp, **state)
        os.replace(tmp, self.directory / f"round-{r}.npz")


def run_fedavg_embedded(initial: Mapping[str, np.ndarray], clients: int, rounds: int, update: LocalUpdate,
                        checkpoints: Checkpoints, progress: ProgressSink = NullProgress(),
                        description: str = "FedAvg rounds") -> tuple[dict[str, np.ndarray], FedAvgLog]:
    """`rounds` FedAvg rounds over `clients` clients in this process; resumes from `checkpoints`."""
    done, state, log = checkpoints.last()
    state = dict(state if state is not None else initial)
    strategy = _strategy(clients)
    with progress.phase(description, rounds * clients) as advance:
        advance(done * clients)
        for r in range(done + 1, rounds + 1):
            down = _arrays(state)
            replies = []
            for c in range(clients):
                sent = _train_message(down, c + 1, r)
                log.messages.append((r, c, "down", record_bytes(sent.content), message_bytes(sent)))
                new_state, weight, metrics = update(state, r, c)
                reply = _reply(reply_content(new_state, weight, metrics), c + 1, r)
                log.messages.append((r, c, "up", record_bytes(reply.content), message_bytes(reply)))
                replies.append(reply)
                advance(1)
            arrays, metrics = strategy.aggregate_train(r, replies)
            assert arrays is not None
            state = _state(arrays)
            log.round_metrics.append({"round": r, **(dict(metrics) if metrics else {})})
            checkpoints.save(r, state, log)
    return state, log


class CountingGrid(Grid):
    """A Flower grid that records the size of every message it sends and receives (FedAvgLog), by
    Flower node id; `client_indices` maps them to client indices once the replies have named them."""

    def __init__(self, inner: Grid, log: FedAvgLog) -> None:
        self.inner, self.log = inner, log
        self.client_of: dict[int, int] = {}  # node id -> client index, from each reply's metrics

    def client_indices(self) -> None:
        self.log.messages = [(r, self.client_of.get(node, -1), d, size, wire)
                             for r, node, d, size, wire in self.log.messages]

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        for m in messages:
            r = int(m.content.config_records["config"].get("server-round", 0)) if "config" in m.content else 0
            self.log.messages.append((r, m.metadata.dst_node_id, "down", record_bytes(m.content), message_bytes(m)))
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if not reply.has_error():
                metrics = reply.content.metric_records.get("metrics", {})
                self.client_of[reply.metadata.src_node_id] = int(metrics.get(CLIENT_KEY, -1))
                r = int(reply.metadata.group_id) if (reply.metadata.group_id or "").isdigit() else 0
                self.log.messages.append((r, reply.metadata.src_node_id, "up", record_bytes(reply.content),
                                          message_bytes(reply)))
        return replies


# --- Flower Simulation: the same rounds through FedAvg.start on Flower's grid ---------------------------

def run_fedavg_simulation(config: FedGRPOConfig, initial: Mapping[str, np.ndarray], rounds: int,
                          client_update: Callable[[FedGRPOConfig, Mapping[str, np.ndarray], int, int],
                                                  tuple[dict[str, np.ndarray], int, dict[str, float]]],
                          ) -> tuple[dict[str, np.ndarray], FedAvgLog]:
    """FedPETuning on Flower's Simulation runtime: one virtual SuperNode per client; the ServerApp runs
    `FedAvg.start` on a `CountingGrid`. `client_update(config, arrays, round, client_index)` is the
    client's local training, run inside the ClientApp."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from fedgrpo.engines.simulation import simulate_apps

    log = FedAvgLog()
    result: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Any) -> None:
        grid_ = CountingGrid(grid, log)
        strategy = _strategy(config.data.clients)
        out = strategy.start(grid=grid_, initial_arrays=_arrays(initial), num_rounds=rounds)
        grid_.client_indices()
        result["state"] = _state(out.arrays)
        result["metrics"] = {r: {k: v for k, v in m.items() if k != CLIENT_KEY}
                             for r, m in out.train_metrics_clientapp.items()}

    client = ClientApp()

    @client.train()
    def _train(message: Message, context: Any) -> Message:
        index = int(context.node_config["partition-id"])
        r = int(message.content.config_records["config"]["server-round"])
        state = _state(message.content.array_records["arrays"])
        new_state, weight, metrics = client_update(config, state, r, index)
        # Which client this node is, for the server's per-client byte log (one int; counted in the bytes).
        reply = Message(reply_content(new_state, weight, {**metrics, CLIENT_KEY: index}), reply_to=message)
        reply.metadata.group_id = str(r)
        return reply

    simulate_apps(server, client, num_supernodes=config.data.clients)
    if "state" not in result:
        from fedgrpo.errors import FedGRPOError

        raise FedGRPOError("the Flower simulation of FedPETuning ended without a result; see the log above")
    log.round_metrics = [{"round": r, **m} for r, m in sorted(result["metrics"].items())]
    return result["state"], log
