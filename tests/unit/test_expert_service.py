"""The persistent expert service and its client: the deployment ClientApp's forwarding path.

Run: pytest tests/unit/test_expert_service.py
"""

from __future__ import annotations

import pytest

from fedgrpo.engines.expert_service import ExpertService, ExpertServiceError, RemoteExpert
from fedgrpo.types import (
    CalibrationItem,
    CalibrationReply,
    CalibrationRequest,
    Hello,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
)


class Expert:
    def __init__(self, expert_id: str = "client-3", domain: str = "spelling", fail: bool = False):
        self.expert_id, self.domain, self.fail = expert_id, domain, fail

    def hello(self) -> Hello:
        return Hello(self.expert_id, self.domain, {"records": {"epsilon": 8.0}})

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        return CalibrationReply(tuple(1.0 if i.answer == "4" else 0.0 for i in request.items))

    def score(self, request: ScoreRequest) -> ScoreReply:
        if self.fail:
            raise RuntimeError("out of memory")
        return ScoreReply(request.step, tuple(float(len(c) % 2) for i in request.items for c in i.candidates))


@pytest.fixture
def service():
    running = ExpertService(Expert("client-3", "spelling")).start()
    yield running
    running.stop()


def test_the_service_answers_like_the_expert_it_holds(service):
    client = RemoteExpert(service.url, timeout_s=5)
    assert client.hello() == Hello("client-3", "spelling", {"records": {"epsilon": 8.0}})
    calibration = CalibrationRequest((CalibrationItem("a1", "basic_arithmetic", "2 + 2?", "4"),
                                      CalibrationItem("a2", "basic_arithmetic", "2 + 3?", "6")))
    assert client.calibrate(calibration) == CalibrationReply((1.0, 0.0))
    request = ScoreRequest(5, (ScoreItem("q", "spell_backward", "Spell 'ab' backward.", ("ba", "b", "é")),))
    assert client.score(request) == ScoreReply(5, (0.0, 1.0, 1.0))


def test_a_scorer_fault_reaches_the_caller_as_one_line():
    faulty = ExpertService(Expert("client-0", "arithmetic", fail=True)).start()
    try:
        with pytest.raises(ExpertServiceError, match="RuntimeError: out of memory"):
            RemoteExpert(faulty.url, timeout_s=5).score(ScoreRequest(0, (ScoreItem("q", "g", "t", ("x",)),)))
    finally:
        faulty.stop()


def test_an_unreachable_service_is_an_error_not_a_hang(service):
    url = service.url
    service.stop()
    with pytest.raises(ExpertServiceError, match="unreachable"):
        RemoteExpert(url, timeout_s=2).hello()


def test_the_service_listens_on_the_loopback_by_default(service):
    assert service.url.startswith("http://127.0.0.1:")
