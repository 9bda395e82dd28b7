"""Dishonest or broken experts, for measuring how FedGRPO copes with them (config `adversaries`).

An adversary is an honest `LocalExpert` whose rewards are replaced before they leave: ``invert``
(1 - r: rewards wrong answers), ``random`` (a fair coin per candidate) or ``max`` (1 for everything).
Its calibration stays honest: it looks competent where it is, and lies afterwards.
"""

from __future__ import annotations

import math

import numpy as np

from fedgrpo.types import CalibrationReply, CalibrationRequest, Hello, ScoreReply, ScoreRequest

BEHAVIOURS = ("invert", "random", "max")


class AdversarialExpert:
    def __init__(self, honest: object, behaviour: str, seed: int = 0) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown adversary behaviour {behaviour!r}: use one of {', '.join(BEHAVIOURS)}")
        self.honest, self.behaviour = honest, behaviour
        self._rng = np.random.default_rng(seed)

    def hello(self) -> Hello:
        return self.honest.hello()  # type: ignore[attr-defined]

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        return self.honest.calibrate(request)  # type: ignore[attr-defined]

    def score(self, request: ScoreRequest) -> ScoreReply:
        reply = self.honest.score(request)  # type: ignore[attr-defined]
        out = []
        for r in reply.rewards:
            if math.isnan(r):
                out.append(r)
            elif self.behaviour == "invert":
                out.append(1.0 - r)
            elif self.behaviour == "random":
                out.append(float(self._rng.integers(0, 2)))
            else:
                out.append(1.0)
        return ScoreReply(reply.step, tuple(out))

    def __getattr__(self, name: str) -> object:  # the honest expert's logs (fidelity, released)
        return getattr(self.honest, name)
