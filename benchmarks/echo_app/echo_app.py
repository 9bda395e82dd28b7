"""Empty-handler Flower round trips: stock `grid.send_and_receive` and FedGRPO's `FlowerTransport`.

The ServerApp sends every node one ~2 KB `query.score` per round (the size of a FedGRPO scoring
request before issue 22 made it smaller) and the ClientApp answers 8 packed rewards without computing
anything. The same app runs in the
Simulation runtime (benchmarks/engines.py calls `build_apps`) and on a deployment (`flwr run`).
"""

from __future__ import annotations

import json
import statistics
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp


def build_apps(rounds: int, nodes: int, request_bytes: int, results: dict | None = None,
               out_file: str = "") -> tuple[ServerApp, ClientApp]:
    server_app, client_app = ServerApp(), ClientApp()

    @client_app.query("hello")
    def hello(message: Message, context: Context) -> Message:
        expert_id = f"client-{context.node_config['partition-id']}"
        return Message(RecordDict({"hello": ConfigRecord({"expert-id": expert_id, "domain": "echo"})}),
                       reply_to=message)

    @client_app.query("score")
    def score(message: Message, context: Context) -> Message:
        from fedgrpo.core.packing import pack_rewards
        from fedgrpo.transport.flower_records import decode_score_request, encode_score_reply
        from fedgrpo.types import WireScoreReply

        request = decode_score_request(message.content)
        return Message(encode_score_reply(WireScoreReply(request.step, pack_rewards([0.0] * request.num_values))),
                       reply_to=message)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        from fedgrpo.engines.flower_patches import patch_serverapp_grid
        from fedgrpo.transport.flower_transport import FlowerTransport
        from fedgrpo.types import (
            QuestionText,
            Reads,
            ScoreItem,
            ScoreRequest,
            WireItem,
            WireScoreRequest,
        )

        # The ServerApp-side setting FedGRPO's own ServerApp makes (engines.flower_app), so that the
        # bare round trip and a FedGRPO round run on the same Flower settings.
        patch_serverapp_grid()

        cfg = context.run_config
        r = int(cfg.get("rounds", rounds))
        k = int(cfg.get("nodes", nodes))
        size = int(cfg.get("request-bytes", request_bytes))
        ids = [f"client-{i}" for i in range(k)]
        transport = FlowerTransport(grid, ids, timeout_s=120, node_wait_s=120)
        request = ScoreRequest(0, (ScoreItem("q", "g", "x" * (size // 2), tuple(["y" * (size // 16)] * 8)),))

        def stock(step: int) -> None:
            from fedgrpo.transport.flower_records import encode_score_request

            item = request.items[0]
            wire = WireScoreRequest(step, "echo", Reads.TEXTS, (
                WireItem(0, QuestionText(item.question_id, item.generator, item.question), item.candidates),))
            messages = [Message(encode_score_request(wire), dst_node_id=node,
                                message_type="query.score", group_id=str(step))
                        for node in transport._node_of.values()]
            replies = list(grid.send_and_receive(messages, timeout=120))
            assert len(replies) == k

        def ours(step: int) -> None:
            results_ = transport.score_round(step, {e: ScoreRequest(step, request.items) for e in ids})
            assert len(results_.replies) == k, results_.failures

        out = {}
        for name, fn in (("send_and_receive", stock), ("flower_transport", ours)):
            times = []
            for step in range(r):
                started = time.perf_counter()
                fn(step)
                times.append(time.perf_counter() - started)
            out[name] = {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
                         "all_s": [round(t, 4) for t in times]}
        target = cfg.get("out-file", out_file)
        if results is not None:
            results.update(out)
        if target:
            with open(str(target), "w") as fh:
                json.dump(out, fh)

    return server_app, client_app


# Two plain assignments: `flwr run` finds components by reading the module's top-level names.
_APPS = build_apps(10, 4, 2000)
server_app = _APPS[0]
client_app = _APPS[1]
