"""The client side of privacy: its secret, its release journal and budget, and the expert wrapper.

`ClientPrivacy` lives in a client's own state directory (never the server's):

- ``secret``: 32 bytes of OS entropy (`privacy.secret`), made on first use, readable by the owner only;
- ``releases.jsonl``: every distinct value the client ever released, as [kind, key, released value],
  appended and fsynced *before* the value leaves. A value key is a digest of what determines the
  value (the verifier, the question, and the candidate's final answer, its full text, or the label:
  `score_keys`), so a value asked again is answered
  from the journal: the same release, no new noise, no new epsilon. The released count and the
  epsilon spent are recomputed from the journal, so no restart resets them, and refused or late
  replies count (they were released);
- ``labels.jsonl``: each private label randomised once (label DP), reused for every later query.

`PrivateExpert` wraps any expert (`hello`, `calibrate`, `score`) and releases every value it sends
through the client's mechanisms: calibration bits by randomised response, rewards by the reward
mechanism; a missing reward is released like a present one (see `privacy.mechanisms`). Before the
wrapped expert does any work it checks that the request fits the budget; a request that would
exceed it is refused whole (`PrivacyBudgetSpent`) and the server re-routes the client's questions.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.durable import Journal
from fedgrpo.privacy.accounting import max_values, values_epsilon
from fedgrpo.privacy.mechanisms import UNIFORMS_PER_VALUE, LabelRandomizedResponse, sign_fidelity
from fedgrpo.privacy.secret import ClientSecret
from fedgrpo.types import (
    CalibrationReply,
    CalibrationRequest,
    Hello,
    Reads,
    ScoreReply,
    ScoreRequest,
)

PRIVACY_BUDGET_SPENT = "privacy budget spent"  # in the reason of a client that stopped at its budget
SCORE, CALIBRATE, LABEL = "score", "calibrate", "label"
SCORE_ANSWER = "score-answer"  # the key of a reward released for a final answer (ANSWERS form)


class PrivacyBudgetSpent(RuntimeError):
    """The client would exceed its privacy budget: it sends nothing more (its questions are re-routed)."""


def value_key(kind: str, generator: str, question: str, text: str) -> str:
    """The key of one released value: a digest of everything that determines it (kind, verifier,
    question, and the candidate, the auxiliary label or nothing). Server and client compute it alike."""
    h = hashlib.sha256()
    for part in (kind, generator, question, text):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def score_keys(request: ScoreRequest) -> list[str]:
    """The key of every value a score reply releases, in reply order, as client and server compute
    it from the resolved request (`transport.session`). In ANSWERS form a reward is released per
    (question, distinct final answer): an answer-matching scorer's reward is a function of the
    verifier, the question and the answer (and the client's reference for that question), so the key
    is the answer's, and the same answer asked again, in any candidate, is the same release. In
    TEXTS form (a scorer that reads the reasoning) a reward is a function of the whole candidate:
    one key per candidate text. The two never share a key (`SCORE_ANSWER` and `SCORE` name them)."""
    kind = SCORE_ANSWER if request.reads is Reads.ANSWERS else SCORE
    return [value_key(kind, item.generator, item.question, c) for item in request.items for c in item.candidates]


def calibration_keys(request: CalibrationRequest) -> list[str]:
    return [value_key(CALIBRATE, item.generator, item.question, item.answer) for item in request.items]


class ClientPrivacy:
    """One client's secret, journal and budget (see the module docstring)."""

    def __init__(self, state_dir: Path, *, values: Any = None, calibration: Any = None, delta: float = 1e-5,
                 budget: float | None = None, labels: LabelRandomizedResponse | None = None) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.secret = ClientSecret.load_or_create(state_dir / "secret")
        self.mechanisms = {SCORE: values, CALIBRATE: calibration}
        self.delta, self.budget, self.labels = delta, budget, labels
        self._journal = Journal(state_dir / "releases.jsonl")
        self._label_journal = Journal(state_dir / "labels.jsonl")
        self._lock = threading.Lock()
        self._released: dict[str, float] = {}
        self.counts: dict[Any, int] = {}
        # A kill can cut the last line short; that value never left (it is written before sending).
        for kind, key, value in self._journal.keep(lambda r: True):
            self._remember(kind, key, value)
        self._noisy_labels: dict[str, str | None] = {key: label for key, label in self._label_journal.keep(lambda r: True)}

    # -- per-value releases --------------------------------------------------------------------

    def release(self, kind: str, keys: Sequence[str], values: np.ndarray) -> np.ndarray:
        """The released value of every key: from the journal when released before, else through
        the kind's mechanism with uniforms from the secret; new ones journalled before returning."""
        values = np.asarray(values, dtype=float)
        if len(keys) != len(values):
            raise ValueError("one key per value")
        mechanism = self._mechanism(kind)
        with self._lock:
            fresh = self._fresh(keys)
            self._check_budget(kind, mechanism, len(fresh))
            if fresh:
                first = {k: i for i, k in reversed(list(enumerate(keys)))}  # a key's first position
                rows = [first[k] for k in fresh]
                uniforms = np.stack([self.secret.uniforms(UNIFORMS_PER_VALUE, "value", kind, k) for k in fresh])
                out = mechanism.release(values[rows], uniforms)
                self._journal.append([[kind, k, float(v)] for k, v in zip(fresh, out)], sync=True)
                for k, v in zip(fresh, out):
                    self._remember(kind, k, float(v))
            return np.array([self._released[k] for k in keys])

    def check(self, kind: str, keys: Sequence[str]) -> None:
        """Raise `PrivacyBudgetSpent` if releasing `keys` would exceed the budget (before any work)."""
        mechanism = self._mechanism(kind)
        with self._lock:
            self._check_budget(kind, mechanism, len(self._fresh(keys)))

    def spent(self) -> dict[str, Any]:
        """Distinct values released per mechanism and the epsilon they compose to at `delta`."""
        with self._lock:
            counts = dict(self.counts)
        return {"released": {m.name: n for m, n in counts.items()}, "delta": self.delta,
                "epsilon": round(values_epsilon(counts, self.delta), 4), "budget": self.budget}

    def declaration(self) -> dict[str, Any]:
        """What this client declares of its own guarantees (in its hello)."""
        out: dict[str, Any] = {}
        values, calibration = self.mechanisms[SCORE], self.mechanisms[CALIBRATE]
        if values is not None:
            out["values"] = {"mechanism": values.name, "epsilon_per_value": values.epsilon,
                             "calibration_mechanism": calibration.name if calibration else None,
                             "delta": self.delta, "budget": self.budget}
        if self.labels is not None:
            out["labels"] = {"mechanism": self.labels.name, "epsilon": self.labels.epsilon, "delta": 0.0}
        return out

    def _mechanism(self, kind: str) -> Any:
        mechanism = self.mechanisms.get(kind)
        if mechanism is None:
            raise ValueError(f"no mechanism releases {kind!r} values for this client")
        return mechanism

    def _fresh(self, keys: Sequence[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self._released]

    def _remember(self, kind: str, key: str, value: float) -> None:
        if key not in self._released:
            self._released[key] = value
            mechanism = self.mechanisms.get(kind)
            if mechanism is not None:
                self.counts[mechanism] = self.counts.get(mechanism, 0) + 1

    def _check_budget(self, kind: str, mechanism: Any, new: int) -> None:
        if self.budget is None or new == 0:
            return
        have = self.counts.get(mechanism, 0)
        limit = max_values(mechanism, self.counts, self.budget, self.delta)
        if have + new > limit:
            raise PrivacyBudgetSpent(
                f"{PRIVACY_BUDGET_SPENT} ({sum(self.counts.values())} values released, epsilon "
                f"{values_epsilon(self.counts, self.delta):.3g} of {self.budget:g}; this {kind} request needs "
                f"{new} more {mechanism.name} values, {max(0, limit - have)} remain)")

    # -- label DP ------------------------------------------------------------------------------

    def noisy_label(self, record_key: str, label: str, prior: Mapping[str, float]) -> str | None:
        """The record's randomised label: made once (RRWithPrior with uniforms from the secret),
        journalled, and the same for every later query of that record."""
        if self.labels is None:
            raise ValueError("label DP is off for this client")
        with self._lock:
            if record_key not in self._noisy_labels:
                noisy = self.labels.release(label, prior, self.secret.uniforms(UNIFORMS_PER_VALUE, LABEL, record_key))
                self._label_journal.append([[record_key, noisy]], sync=True)
                self._noisy_labels[record_key] = noisy
            return self._noisy_labels[record_key]

    def has_noisy_label(self, record_key: str) -> bool:
        return record_key in self._noisy_labels


class PrivateExpert:
    """An expert whose every value leaves through its client's mechanisms (module docstring)."""

    def __init__(self, inner: Any, privacy: ClientPrivacy) -> None:
        self.inner, self.privacy = inner, privacy
        # The client's own log, never sent: per scoring request, the share of advantage signs its noise
        # preserved (what a given epsilon costs, before any accuracy is measured).
        self.fidelity: list[tuple[int, float]] = []

    @property
    def expert_id(self) -> str:
        return self.inner.expert_id

    @property
    def domain(self) -> str:
        return self.inner.domain

    def hello(self) -> Hello:
        hello = self.inner.hello()
        return replace(hello, privacy={**hello.privacy, **self.privacy.declaration()})

    def warm_up(self) -> None:
        getattr(self.inner, "warm_up", lambda: None)()

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        keys = calibration_keys(request)
        self.privacy.check(CALIBRATE, keys)
        reply = self.inner.calibrate(request)
        return CalibrationReply(tuple(float(v) for v in self.privacy.release(CALIBRATE, keys, np.array(reply.correct))))

    def score(self, request: ScoreRequest) -> ScoreReply:
        keys = score_keys(request)
        self.privacy.check(SCORE, keys)
        reply = self.inner.score(request)
        clean = np.array(reply.rewards, dtype=float)
        noisy = self.privacy.release(SCORE, keys, clean)
        shares, offset = [], 0
        for item in request.items:
            n = len(item.candidates)
            share = sign_fidelity(clean[offset:offset + n], noisy[offset:offset + n])
            if share is not None:
                shares.append(share)
            offset += n
        if shares:
            self.fidelity.append((request.step, float(np.mean(shares))))
        return ScoreReply(step=reply.step, rewards=tuple(float(r) for r in noisy))
