"""Dishonest or broken experts, for measuring how FedGRPO copes with them (config `adversaries`).

An adversary is an honest expert (a `LocalExpert`) whose rewards are replaced before they leave. Its
calibration stays honest: it looks competent where it is, and lies afterwards. The zoo:

| behaviour | what it sends |
|---|---|
| ``invert`` | 1 - r for every reward (rewards wrong answers) |
| ``random`` | a fair coin per candidate |
| ``max`` | 1 for everything |
| ``probe_aware`` | honest on any question it saw at calibration (the server could check those), 1 - r elsewhere |
| ``flip:P`` | each reward flipped with probability P (default 0.3) |
| ``lazy`` | 1 for every candidate of a question its own model is unsure of (fewer than 3 of 4 sampled answers agree), honest elsewhere |
| ``targeted:F`` | 1 - r on one sub-topic only, a share F of questions (default 0.25) picked by a hash of the text: the same for every expert that targets |
| ``collude`` | as ``probe_aware``; two experts of one domain configured so lie alike (measured with two clients per domain) |

A missing reward (NaN) stays missing. Everything random is seeded, so runs repeat.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable

import numpy as np

from fedgrpo.types import CalibrationReply, CalibrationRequest, Hello, ScoreReply, ScoreRequest

BEHAVIOURS = ("invert", "random", "max", "probe_aware", "flip", "lazy", "targeted", "collude")
DEFAULT_PARAMETER = {"flip": 0.3, "targeted": 0.25}
LAZY_SAMPLES, LAZY_AGREEMENT = 4, 0.75  # sampled answers per question, and the majority share it trusts


def parse_behaviour(spec: str) -> tuple[str, float | None]:
    """``NAME`` or ``NAME:P`` -> (name, parameter); ValueError naming the fix."""
    name, sep, value = spec.partition(":")
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown adversary behaviour {name!r}: use one of {', '.join(BEHAVIOURS)}")
    if not sep:
        return name, DEFAULT_PARAMETER.get(name)
    if name not in DEFAULT_PARAMETER:
        raise ValueError(f"adversary behaviour {name!r} takes no parameter; write {name}")
    try:
        parameter = float(value)
    except ValueError:
        raise ValueError(f"adversary behaviour {name}:{value}: the parameter is a share in [0, 1], e.g. {name}:0.3") from None
    if not 0 <= parameter <= 1:
        raise ValueError(f"adversary behaviour {name}:{value}: the parameter is a share in [0, 1]")
    return name, parameter


def in_sub_topic(question: str, share: float) -> bool:
    """Whether a question is in the targeted sub-topic: a stable hash of its text below `share`."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class AdversarialExpert:
    def __init__(self, honest: object, behaviour: str, seed: int = 0) -> None:
        self.honest = honest
        self.behaviour, self.parameter = parse_behaviour(behaviour)
        self._rng = np.random.default_rng(seed)
        self._seen: set[str] = set()  # question ids and texts it answered at calibration

    def hello(self) -> Hello:
        return self.honest.hello()  # type: ignore[attr-defined]

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        for item in request.items:
            self._seen.update((item.question_id, item.question))
        return self.honest.calibrate(request)  # type: ignore[attr-defined]

    def score(self, request: ScoreRequest) -> ScoreReply:
        reply = self.honest.score(request)  # type: ignore[attr-defined]
        lie = self._lie_for(request)
        out, offset = [], 0
        for item in request.items:
            rewards = reply.rewards[offset:offset + len(item.candidates)]
            offset += len(item.candidates)
            transform = lie(item)
            out += [r if math.isnan(r) else transform(r) for r in rewards]
        return ScoreReply(reply.step, tuple(out))

    def _lie_for(self, request: ScoreRequest) -> Callable[[object], Callable[[float], float]]:
        """Per item of this request: the function its rewards go through."""
        b, p = self.behaviour, self.parameter

        def honest(r: float) -> float:
            return r

        def invert(r: float) -> float:
            return 1.0 - r

        if b == "invert":
            return lambda item: invert
        if b == "max":
            return lambda item: lambda r: 1.0
        if b == "random":
            return lambda item: lambda r: float(self._rng.integers(0, 2))
        if b == "flip":
            return lambda item: lambda r: 1.0 - r if self._rng.random() < p else r
        if b in ("probe_aware", "collude"):
            return lambda item: honest if (item.question_id in self._seen or item.question in self._seen) else invert
        if b == "targeted":
            return lambda item: invert if in_sub_topic(item.question, p) else honest
        unsure = self._unsure(request)  # lazy
        return lambda item: (lambda r: 1.0) if item.question_id in unsure else honest

    def _unsure(self, request: ScoreRequest) -> set[str]:
        """Question ids whose sampled answers (its own model's) agree less than LAZY_AGREEMENT."""
        samples = self.honest._answer_samples(  # type: ignore[attr-defined]
            [(i.question_id, i.question) for i in request.items], LAZY_SAMPLES)
        unsure = set()
        for qid, answers in samples.items():
            counts = Counter(a for a in answers if a is not None)
            if not counts or counts.most_common(1)[0][1] / len(answers) < LAZY_AGREEMENT:
                unsure.add(qid)
        return unsure

    def __getattr__(self, name: str) -> object:  # the honest expert's logs and internals
        return getattr(self.honest, name)
