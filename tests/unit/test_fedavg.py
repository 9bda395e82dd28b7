"""FedPETuning's federation: Flower's FedAvg average, byte log, checkpoints and resume."""

from __future__ import annotations

import numpy as np
import pytest

from fedgrpo.engines.fedavg import (
    Checkpoints,
    fedavg_mean,
    record_bytes,
    reply_content,
    run_fedavg_embedded,
)


def test_flower_fedavg_is_the_weighted_mean():
    rng = np.random.default_rng(0)
    states = [{"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
              for _ in range(3)]
    weights = [30, 10, 60]
    got = fedavg_mean(list(zip(states, weights)))
    for key in ("a", "b"):
        by_hand = sum(w * s[key] for s, w in zip(states, weights)) / sum(weights)
        np.testing.assert_allclose(got[key], by_hand, rtol=1e-6)


def _fake_update(calls):
    def update(arrays, r, c):
        calls.append((r, c))
        return {k: v + (c + 1) * r for k, v in arrays.items()}, c + 1, {"loss": float(r)}
    return update


INITIAL = {"w": np.zeros((2, 3), dtype=np.float32)}


def test_rounds_average_and_log_every_message(tmp_path):
    calls = []
    state, log = run_fedavg_embedded(INITIAL, clients=2, rounds=3, update=_fake_update(calls),
                                     checkpoints=Checkpoints(tmp_path))
    # Round r: client c adds (c+1) r, weights 1 and 2 -> the mean adds (1*1 + 2*2) r / 3.
    np.testing.assert_allclose(state["w"], np.full((2, 3), sum(5 * r / 3 for r in (1, 2, 3))), rtol=1e-6)
    assert calls == [(r, c) for r in (1, 2, 3) for c in (0, 1)]
    assert len(log.messages) == 3 * 2 * 2
    ups = [size for _, _, d, size, _ in log.messages if d == "up"]
    assert ups[0] == record_bytes(reply_content({"w": INITIAL["w"]}, 1, {"loss": 1.0}))
    assert ups[0] > 6 * 4  # six float32 values and the record's framing
    assert log.totals()["up"] == sum(ups)
    # Beside the payload, each message as Flower serializes it: more than its records, for its metadata
    # and each object's header.
    assert all(wire > size for _, _, _, size, wire in log.messages)
    assert [m["round"] for m in log.round_metrics] == [1, 2, 3]


def test_a_killed_run_resumes_at_the_next_round(tmp_path):
    calls = []
    update = _fake_update(calls)

    def dies_in_round_3(arrays, r, c):
        if r == 3:
            raise KeyboardInterrupt
        return update(arrays, r, c)

    with pytest.raises(KeyboardInterrupt):
        run_fedavg_embedded(INITIAL, 2, 4, dies_in_round_3, Checkpoints(tmp_path / "run"))
    calls.clear()
    resumed, log = run_fedavg_embedded(INITIAL, 2, 4, update, Checkpoints(tmp_path / "run"))
    assert calls == [(3, 0), (3, 1), (4, 0), (4, 1)]  # rounds 1-2 are not redone
    straight, straight_log = run_fedavg_embedded(INITIAL, 2, 4, _fake_update([]), Checkpoints(tmp_path / "other"))
    np.testing.assert_array_equal(resumed["w"], straight["w"])
    assert log.messages == straight_log.messages
