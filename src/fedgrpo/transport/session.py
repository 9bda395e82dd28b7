"""Both sides of a scoring session (issue 22): each expert gets what its scorer reads, each question's
text once, and rewards back at their information content.

What travels per scorer (the expert declares what it reads in its hello, `types.Reads`):

| scorer | down, per question of a request | up |
|---|---|---|
| answer matching (LocalExpert's answer-based, model-based and gated modes; the verifier): ANSWERS | its number in the session; the distinct final answers of its candidates (the server's `PromptStyle.extract`; NO_ANSWER for a candidate without one) | one reward per distinct answer |
| a plug-in scorer that reads the reasoning (or any expert that declares nothing): TEXTS | its number in the session; every candidate's full text, compressed per request (`core.packing.compress_texts`) | one reward per candidate |

and, for both, the question's id, verifier and text the first time the expert is sent it in the
session. Rewards go up packed (`core.packing`): bits for 0/1 values, 8-bit levels otherwise, a mask
for missing ones.

**Server** (`ScoringSession`, inside every base transport; `score_round` is the round every engine
runs): numbers each expert's questions in order of first sending, keeps which texts each expert
acknowledged (by a reply that was accepted), extracts and de-duplicates final answers, and maps each
reply back to one reward per candidate, every candidate getting the reward its own answer earned.
The format reward stays on the server (`training.reward`), which keeps the full texts.

**Client** (`ClientEndpoint`, around a client's `Expert` on every engine: in the embedded transport,
a simulated node's ClientApp, a site's expert service): keeps the texts of each session by number,
turns a wire request into the resolved one its expert reads, checks the expert's reply against the
reply contract and packs it.

**A client that lacks a text** (it restarted: an expert service, a Ray worker of a Simulation) says so:
it answers a request naming a question it does not have with a failure of kind NEEDS_TEXT, before
its expert does any work. The server then forgets what that expert held and sends the same request
again, in the same round, with every question's text. One design for every cause (a restart, an
evicted cache, another worker process): the client never guesses, the server never assumes; the
cost is one more round trip, only after a restart. A new server (a resumed run) starts a new session
under a new name, so a number never means two questions to a client; the client keeps the texts of
its last MAX_SESSIONS sessions and at most MAX_CACHED_CHARS characters in memory (past that it
forgets, and says so when asked). Where one site's messages are served by several processes (Flower
Simulation hands a node's messages to whichever Ray worker is free), the site's endpoints share its
texts through a `store` directory of the site's own: each appends the texts it receives to its
session's file, and one that lacks a text reads the file before it says so.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedgrpo.core.packing import distinct_answers, pack_rewards, spread, unpack_rewards
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.durable import Journal
from fedgrpo.privacy.client import score_keys
from fedgrpo.transport.base import Expert, ExpertFault, TrafficLedger, refuse_score
from fedgrpo.transport.contract import (
    ReplyRefused,
    check_calibration_reply,
    check_score_reply,
    check_wire_score_reply,
)
from fedgrpo.types import (
    CalibrationRequest,
    ExpertFailure,
    FailureKind,
    Hello,
    QuestionText,
    Reads,
    RewardForm,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    ScoreResults,
    WireCalibrationReply,
    WireItem,
    WireScoreReply,
    WireScoreRequest,
)

MAX_SESSIONS = 4  # sessions a client keeps texts for (one server at a time, a few restarts)
MAX_CACHED_CHARS = 32 << 20  # characters of question texts a client keeps, all sessions together


# --- the server's side -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outgoing:
    """One expert's request of one round: as asked (`asked`: full texts, one reward per candidate),
    as its scorer reads it (`resolved`: the keys of the values it releases), and as it travels
    (`wire`); `index` per item, each candidate's position among the item's values (None: one value
    per candidate)."""

    asked: ScoreRequest
    resolved: ScoreRequest
    wire: WireScoreRequest
    index: tuple[tuple[int, ...] | None, ...]


class ScoringSession:
    """The server's side of one transport's scoring messages (module docstring). `style` reads final
    answers (None: every expert gets full texts); `reads` is what each expert declared."""

    def __init__(self, style: PromptStyle | None, reads: Mapping[str, Reads]) -> None:
        self.name = secrets.token_hex(8)
        self.style = style
        self.reads = dict(reads)
        self._refs: dict[str, dict[str, int]] = {}  # expert -> question id -> its number
        self._known: dict[str, set[str]] = {}  # expert -> question ids whose text it acknowledged
        self._lock = threading.Lock()
        self._shape: dict[str, dict[str, int]] = {}  # per form: what was sent (`shape`)
        self._questions: dict[str, set[str]] = {}  # per form: question ids sent
        self._visits: dict[str, set[tuple[int, str]]] = {}  # per form: (step, question id) sent
        self._journal: Journal | None = None

    def attach(self, path: Path, resume_step: int) -> None:
        """Journal this session in `path`; on a resumed run go on with the one kept there: the same
        name, the same question numbers, and what each expert held before the checkpoint
        (`resume_step`: as `transport.base.LedgerFile`, records of later steps are dropped and the
        run redoes them). With its clients' texts in their stores (`ClientEndpoint.store`), a resumed
        run then sends exactly what the uninterrupted one sent. A number the server left out a text
        for was acknowledged before the checkpoint, and a number is never given to a second question
        of a session without its text, so a client's store cannot resolve one wrongly."""
        def keep(record: Any) -> bool:  # the session's name, and what happened before the checkpoint
            return isinstance(record, list) and len(record) >= 2 and (record[0] == "session" or record[1] < resume_step)

        journal = Journal(path)
        kept = journal.keep(keep)
        with self._lock:
            names = [r[1] for r in kept if r[0] == "session"]
            if names:
                self.name = names[0]
            else:
                journal.append([["session", self.name]])
            for record in kept:
                if record[0] == "ref":
                    _, _, expert_id, question_id, ref = record
                    self._refs.setdefault(expert_id, {})[question_id] = ref
                elif record[0] == "known":
                    self._known.setdefault(record[2], set()).update(record[3])
                elif record[0] == "forget":
                    self._known.pop(record[2], None)
            self._journal = journal

    def form_of(self, expert_id: str) -> Reads:
        """What `expert_id` is sent: what it reads, where the server can extract answers."""
        return self.reads.get(expert_id, Reads.TEXTS) if self.style is not None else Reads.TEXTS

    def outgoing(self, expert_id: str, asked: ScoreRequest) -> Outgoing:
        """`asked` (full candidate texts) as `expert_id` is sent it."""
        if asked.reads is not Reads.TEXTS:
            raise ValueError("a scoring round asks with full candidate texts")
        form = self.form_of(expert_id)
        items, index = [], []
        for item in asked.items:
            if form is Reads.ANSWERS:
                assert self.style is not None
                distinct, where = distinct_answers([self.style.extract(c) for c in item.candidates])
                items.append(ScoreItem(item.question_id, item.generator, item.question, distinct))
                index.append(where)
            else:
                items.append(item)
                index.append(None)
        with self._lock:
            refs = self._refs.setdefault(expert_id, {})
            sending = set(self._known.get(expert_id, ()))
            wire_items, numbered = [], []
            for item in items:
                if item.question_id not in refs:
                    refs[item.question_id] = len(refs)
                    numbered.append(["ref", asked.step, expert_id, item.question_id, refs[item.question_id]])
                ref = refs[item.question_id]
                text = None
                if item.question_id not in sending:
                    text = QuestionText(item.question_id, item.generator, item.question)
                    sending.add(item.question_id)  # once per request
                wire_items.append(WireItem(ref, text, item.candidates))
            wire = WireScoreRequest(asked.step, self.name, form, tuple(wire_items))
            self._count(form, asked, wire)
            if self._journal is not None and numbered:
                self._journal.append(numbered)
        return Outgoing(asked, ScoreRequest(asked.step, tuple(items), form), wire, tuple(index))

    def accepted(self, expert_id: str, outgoing: Outgoing) -> None:
        """`expert_id` answered `outgoing`: it holds the texts of its questions now."""
        questions = sorted({i.question_id for i in outgoing.resolved.items})
        with self._lock:
            self._known.setdefault(expert_id, set()).update(questions)
            if self._journal is not None:
                self._journal.append([["known", outgoing.asked.step, expert_id, questions]])

    def forget(self, expert_id: str, step: int) -> None:
        """`expert_id` lacks texts it was sent (it restarted): send every text again."""
        with self._lock:
            self._known.pop(expert_id, None)
            if self._journal is not None:
                self._journal.append([["forget", step, expert_id]])

    def shape(self) -> dict[str, dict[str, Any]]:
        """Per form, what this session sent: requests, items (one expert's block of one question),
        distinct questions and (step, question) visits, candidates asked, values sent (distinct
        answers or candidates) and their UTF-8 bytes, question texts sent and their bytes. The
        schedule of the closed forms at the paper's scale (`core.costs.Schedule`) is read from it."""
        with self._lock:
            return {form: {**counts, "questions": len(self._questions[form]), "visits": len(self._visits[form])}
                    for form, counts in self._shape.items()}

    def _count(self, form: Reads, asked: ScoreRequest, wire: WireScoreRequest) -> None:
        counts = self._shape.setdefault(form.value, dict.fromkeys(
            ("requests", "items", "candidates", "values", "value_bytes", "candidate_bytes", "texts_sent",
             "text_bytes"), 0))
        counts["requests"] += 1
        counts["items"] += len(wire.items)
        counts["candidates"] += asked.num_candidates
        counts["values"] += wire.num_values
        counts["value_bytes"] += sum(len(c.encode("utf-8")) for i in wire.items for c in i.candidates)
        counts["candidate_bytes"] += sum(len(c.encode("utf-8")) for i in asked.items for c in i.candidates)
        sent = [i.text for i in wire.items if i.text is not None]
        counts["texts_sent"] += len(sent)
        counts["text_bytes"] += sum(len(t.question.encode("utf-8")) for t in sent)
        self._questions.setdefault(form.value, set()).update(i.question_id for i in asked.items)
        self._visits.setdefault(form.value, set()).update((asked.step, i.question_id) for i in asked.items)

    @staticmethod
    def to_asked(outgoing: Outgoing, values: np.ndarray) -> ScoreReply:
        """One reward per candidate of `outgoing.asked` from the reply's values: each candidate gets
        the value of its own answer."""
        rewards: list[float] = []
        offset = 0
        for item, where in zip(outgoing.resolved.items, outgoing.index, strict=True):
            n = len(item.candidates)
            block = tuple(float(v) for v in values[offset:offset + n])
            rewards.extend(block if where is None else spread(block, where))
            offset += n
        return ScoreReply(outgoing.asked.step, tuple(rewards))


@dataclass(frozen=True)
class Arrival:
    """What came back from one expert in a round: its reply (`reply`, not yet checked) and the
    reply's wire bytes, or why nothing usable did (`reason` and `kind`; `refused`: the reply's
    records or body broke the contract before a reply could be read)."""

    reply: object = None
    wire_bytes: int | None = None
    reason: str = ""
    kind: FailureKind | None = None
    refused: Exception | None = None


# expert id -> wire request ==> expert id -> what came back; the engine records each request sent.
Exchange = Callable[[int, Mapping[str, WireScoreRequest]], dict[str, Arrival]]


def score_round(session: ScoringSession, ledger: TrafficLedger, step: int, requests: Mapping[str, ScoreRequest],
                exchange: Exchange) -> ScoreResults:
    """The scoring round of every engine: each request as its expert reads it, exchanged by the
    engine, an expert that lacks a text asked again with every text, each reply checked, recorded
    and mapped back to one reward per candidate."""
    outgoing = {e: session.outgoing(e, r) for e, r in requests.items()}
    arrivals = exchange(step, {e: o.wire for e, o in outgoing.items()})
    lacking = [e for e, a in arrivals.items() if a.kind is FailureKind.NEEDS_TEXT]
    if lacking:
        for expert_id in lacking:
            session.forget(expert_id, step)
        again = {e: session.outgoing(e, requests[e]) for e in lacking}
        outgoing.update(again)
        arrivals.update(exchange(step, {e: o.wire for e, o in again.items()}))
    replies: dict[str, ScoreReply] = {}
    failures: list[ExpertFailure] = []
    for expert_id in requests:
        arrival = arrivals[expert_id]
        if arrival.refused is not None:
            failures.append(refuse_score(ledger, step, expert_id, arrival.refused))
        elif arrival.kind is not None:
            failures.append(ExpertFailure(expert_id, step, arrival.reason, arrival.kind))
        else:
            kept = accept_score(ledger, session, step, expert_id, outgoing[expert_id], arrival)
            if isinstance(kept, ExpertFailure):
                failures.append(kept)
            else:
                replies[expert_id] = kept
    return ScoreResults(replies=replies, failures=tuple(failures))


def accept_score(ledger: TrafficLedger, session: ScoringSession, step: int, expert_id: str, outgoing: Outgoing,
                 arrival: Arrival) -> ScoreReply | ExpertFailure:
    """The reply to keep, one reward per candidate, or the failure it is: one that breaks the
    contract (`transport.contract`: wrong type, a malformed packing; REFUSED, counted in
    ``ledger.refused``) or one for another step (STALE, counted in ``ledger.stale_replies``)."""
    try:
        kept = check_wire_score_reply(arrival.reply, outgoing.wire)
    except ReplyRefused as exc:
        return refuse_score(ledger, step, expert_id, exc)
    if kept.step != step:
        ledger.stale_replies += 1
        return ExpertFailure(expert_id, step, f"stale reply for step {kept.step}", FailureKind.STALE)
    ledger.record("score", step, expert_id, "up", kept, arrival.wire_bytes)
    if ledger.track_releases:  # every value is released (a missing one as a fair coin)
        ledger.release("score", step, expert_id, score_keys(outgoing.resolved))
    session.accepted(expert_id, outgoing)
    return session.to_asked(outgoing, unpack_rewards(kept.rewards, outgoing.wire.num_values))


# --- the client's side -----------------------------------------------------------------------------

class ClientEndpoint:
    """A client's `Expert` on the wire (module docstring): keeps the texts of each session, resolves
    a wire request into the one its expert reads, packs the reply. `store` is a directory of the
    site's own where every process serving the site shares the texts (None: this process keeps
    them alone). `quantisation_error` is the largest difference 8-bit packing made to a reward it
    sent (the client's own log; 0 while every reply went as bits)."""

    speaks_wire: ClassVar[bool] = True  # a transport uses it as it is (`EmbeddedTransport`)

    def __init__(self, expert: Expert, store: Path | None = None) -> None:
        self.expert = expert
        self.store = store
        self._texts: OrderedDict[str, dict[int, QuestionText]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.quantisation_error = 0.0

    def hello(self) -> Hello:
        return self.expert.hello()

    def calibrate(self, request: CalibrationRequest) -> WireCalibrationReply:
        reply = check_calibration_reply(self.expert.calibrate(request), request)
        return WireCalibrationReply(pack_rewards(reply.correct))

    def score(self, request: WireScoreRequest) -> WireScoreReply:
        """The expert's reply to `request`, checked and packed; ExpertFault NEEDS_TEXT before any work
        when the request names a question this client does not have."""
        resolved = self.resolve(request)
        reply = check_score_reply(self.expert.score(resolved), resolved)
        packed = pack_rewards(reply.rewards)
        if packed.form is RewardForm.Q8:
            sent = unpack_rewards(packed, len(reply.rewards))
            error = float(np.nanmax(np.abs(sent - np.array(reply.rewards)), initial=0.0))
            self.quantisation_error = max(self.quantisation_error, error)
        return WireScoreReply(reply.step, packed)

    def resolve(self, request: WireScoreRequest) -> ScoreRequest:
        """The resolved request: every item with its question's id, verifier and text."""
        with self._lock:
            texts = self._session(request.session)
            new = [(item.ref, item.text) for item in request.items if item.text is not None]
            for ref, text in new:
                self._keep(texts, ref, text)
            if new and self.store is not None:
                self._journal(request.session).append(
                    [[ref, t.question_id, t.generator, t.question] for ref, t in new])
            if self.store is not None and any(item.ref not in texts for item in request.items):
                self._load(request.session, texts)  # another process of this site may have them
            missing = sorted({item.ref for item in request.items if item.ref not in texts})
            if missing:
                shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
                raise ExpertFault(f"{len(missing)} question(s) of session {request.session[:16]} unknown here "
                                  f"(numbers {shown}): send their texts", FailureKind.NEEDS_TEXT)
            items = tuple(ScoreItem(texts[i.ref].question_id, texts[i.ref].generator, texts[i.ref].question,
                                    i.candidates) for i in request.items)
        return ScoreRequest(request.step, items, request.reads)

    def _journal(self, session: str) -> Journal:
        """The session's file in the store (named by a digest: the name comes from the server), the
        store pruned to its MAX_SESSIONS newest files when a session starts."""
        assert self.store is not None
        path = self.store / f"texts-{hashlib.sha256(session.encode('utf-8')).hexdigest()[:24]}.jsonl"
        if not path.is_file():
            self.store.mkdir(parents=True, exist_ok=True)
            older = sorted(self.store.glob("texts-*.jsonl"), key=lambda p: p.stat().st_mtime)
            for old in older[:max(0, len(older) - MAX_SESSIONS + 1)]:
                old.unlink(missing_ok=True)
        return Journal(path)

    def _load(self, session: str, texts: dict[int, QuestionText]) -> None:
        for record in self._journal(session).read():
            if (isinstance(record, list) and len(record) == 4 and type(record[0]) is int
                    and all(isinstance(v, str) for v in record[1:]) and record[0] not in texts):
                self._keep(texts, record[0], QuestionText(*record[1:]))

    def _session(self, name: str) -> dict[int, QuestionText]:
        if name not in self._texts:
            self._texts[name] = {}
            while len(self._texts) > MAX_SESSIONS:
                _, dropped = self._texts.popitem(last=False)
                self._chars -= sum(_chars(t) for t in dropped.values())
        self._texts.move_to_end(name)
        return self._texts[name]

    def _keep(self, texts: dict[int, QuestionText], ref: int, text: QuestionText) -> None:
        old = texts.get(ref)
        self._chars += _chars(text) - (_chars(old) if old else 0)
        texts[ref] = text
        if self._chars > MAX_CACHED_CHARS:  # forget every other session's texts, then this one's oldest
            for name in list(self._texts):
                if self._texts[name] is not texts:
                    self._chars -= sum(_chars(t) for t in self._texts.pop(name).values())
            for old_ref in list(texts):
                if self._chars <= MAX_CACHED_CHARS or old_ref == ref:
                    break
                self._chars -= _chars(texts.pop(old_ref))


def _chars(text: QuestionText) -> int:
    return len(text.question_id) + len(text.generator) + len(text.question)


def wire_endpoint(expert: Any, store: Path | None = None) -> Any:
    """`expert` as a transport reaches it: itself when it speaks the wire (a `ClientEndpoint`, a
    site's `RemoteExpert`), else behind a new `ClientEndpoint` (keeping its texts in `store`)."""
    return expert if getattr(expert, "speaks_wire", False) else ClientEndpoint(expert, store)
