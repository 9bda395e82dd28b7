"""Dishonest or broken experts caught by a re-check on probes no expert can tell from real questions,
and by spot checks where a second competent expert scores the same candidates.

**Probes** (issue 21). A probe is a training question whose answer the server knows: a share of the
GRPO dataset (config probe_share) drawn from a labelled split no expert has seen in any role
(`data.partition`, role ``probe``). The policy samples its candidates as it does for any question,
TRL shuffles it among the real ones, the confidence graph routes it, and its expert meets it at a
random position of a request with the same number of candidates, so nothing tells a probe apart (a
classifier on what an expert sees does no better than chance: tests/unit/test_probe_indistinguishable.py).
Here, each reply's values on a probe are compared with the truth of each answer (`ProbeBook`): per
distinct final answer (what the expert released: one value per answer), right (1) or wrong (0). Only
a block holding at least one right and one wrong answer counts: there the expected rewards are known
both ways, and an expert that rewards everything alike cannot agree with all of them. The probes
train nothing (`training.reward`: their rewards are None to TRL). An expert is judged only on
questions the routing trusts it with (`competent`: the best expert of the question and every other
whose competence clears the threshold): elsewhere (a substitute's questions after a failure) its
honest rewards are a non-expert's, and its mistakes no sign of lying. Under competence_threshold 0
(the paper's fixed top-M) every expert counts as competent everywhere, and a non-expert's honest
mistakes count against it.

**Spot checks** (config spot_check_share). Each judged block of a question is, with that
probability, also put to a second competent expert (the next in `competent`, among the experts asked
in the same round), as an item at a random position of its request, with the same candidates as any
item; its rewards there are evidence only, the first expert's train. On a
probe, both are compared with the truth; elsewhere their labels on the same answers are counted as
pairs of unknown truth. Draws are a hash of (seed, step, expert, question), so a resumed run draws
what the uninterrupted one drew.

**The rater.** All evidence feeds one-coin Dawid-Skene over the experts (`core.rater`): probe values
are anchors, spot-check pairs items of unknown truth, counted once one of the two experts has proven
itself on probes (`_judge` says why); the rewards are read as released (under local DP
with randomised response the threshold is moved onto the released scale: an honest expert then agrees
with probability p_keep, not 1). After every round, an expert whose accuracy is below `threshold`
with 99% posterior probability is flagged (`core.rater.rater_reading` says why a bound and not the
mean), and the evidence is in `report()`:

- *corrected* (with `correct_inverted`) when its estimated accuracy is below 1/2: it is
  anti-correlated with the truth, and the maximum-likelihood reading of a one-coin rater with accuracy
  under 1/2 is the opposite label, so its rewards are used as 1 - reward, from the reply of that very
  round on. It stays checked; once its accuracy is confidently above 1 - threshold (it stopped
  inverting), it is excluded;
- *excluded* otherwise (random or always-1 rewards carry nothing to recover): its replies are
  refused as a failure of kind FLAGGED (`FailoverTransport`, outside this one, then loses it and
  sends its questions to the next-best expert).

Why these rules (measured once, 2026-12-07, not a results file: the default experts scoring the
default base policy's 4 samples of 600 validation questions per domain, values on the groups holding
a right and a wrong answer): an honest expert's accuracy is its own answers' (arithmetic 0.98,
algebra 0.83, spelling 1.00, products 0.92), an inverting one's one minus that, a random one's 0.5,
an always-1 one's the share of right values (0.35-0.44). Drawing 150 such groups per expert (a
run's worth at probe_share 0.05) 1,000 times: the old rule (posterior mean below 0.75 after 8
values) flagged the honest algebra expert in half of the runs; below 0.7 with 99% probability
flagged no honest expert, corrected every inverting one (median: on its 2nd to 3rd group), excluded
every random one (its 10th to 11th) and flagged every always-1 one (its 4th to 11th). An always-1
expert where right answers are rare (algebra: 0.35 of the values) reads as worse than chance and is
corrected in about half of the runs: its rewards become constant zeros, no signal either way, as
none is left when it is excluded. (A one-coin rater cannot tell a constant from an inverter; a
two-coin one, with an accuracy per truth, could.)

With `journal`, the state after every round is appended to a file; a resumed run restores the last
state before its checkpoint (`resume`).

Where several experts score the same candidates (config score_replication), each one's agreement
with its peers' median is counted and reported next to its probes (`peer_values`, `peer_agreed`), as
evidence, not as a reason to flag (`_compare_peers` says why).

Limits: evidence accrues at the probes' rate (a liar keeps the rewards it sent before its flag); an
expert that lies on a small share of questions (a sub-topic, a flip probability) may stay within what
an honest expert's own mistakes look like, and is then not flagged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fedgrpo.core.aggregate import peer_agreement
from fedgrpo.core.packing import distinct_answers
from fedgrpo.core.rater import (
    INVERTED,
    TRUSTED,
    as_labels,
    one_coin_dawid_skene,
    probe_agreement,
    rater_reading,
    surely_above,
)
from fedgrpo.data.tasks import Question
from fedgrpo.transport.base import ExpertTransport, TransportWrapper
from fedgrpo.types import (
    NO_ANSWER,
    ExpertFailure,
    FailureKind,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    ScoreResults,
)

FLAGGED = "flagged as dishonest"  # opens the reason of a flagged expert's refused reply (kind FLAGGED)
EXCLUDED, CORRECTED = "excluded", "corrected"  # what is done with a flagged expert's rewards


@dataclass(frozen=True)
class ProbeBook:
    """The server's labelled probes (question id -> question with its answer) and how it reads a
    candidate's final answer (`extract`) and judges it (`is_right`: `data.gym.is_correct`)."""

    questions: Mapping[str, Question]
    extract: Callable[[str], str | None]
    is_right: Callable[[Question, str | None], bool]

    def evidence(self, item: ScoreItem, rewards: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, truths) per distinct final answer of `item`, one expert's block of a probe, from its
        rewards per candidate; None when `item` is no probe or its answers are all right or all wrong."""
        question = self.questions.get(item.question_id)
        if question is None:
            return None
        answers, labels = answer_labels([self.extract(c) for c in item.candidates], rewards)
        truths = np.array([1.0 if a is not None and self.is_right(question, a) else 0.0 for a in answers])
        if truths.min() == truths.max():  # all right or all wrong: nothing known both ways
            return None
        return labels, truths


def answer_labels(answers: Sequence[str | None], rewards: Sequence[float]) -> tuple[list[str | None], np.ndarray]:
    """The distinct final answers of a block (None: no answer) and one label each (`core.rater.as_labels`
    of the mean of its candidates' present rewards; NaN where none is present): what the expert
    released, one value per answer (`transport.session`), whatever the form it read.

    >>> answer_labels(["5", "7", "5", None], [1.0, 0.0, 1.0, float("nan")])
    (['5', '7', None], array([ 1.,  0., nan]))
    """
    distinct, where = distinct_answers(answers)
    values = np.full(len(distinct), np.nan)
    r = np.asarray(rewards, dtype=np.float64)  # (candidates,)
    index = np.asarray(where)
    for i in range(len(distinct)):
        present = r[(index == i) & ~np.isnan(r)]
        if len(present):
            values[i] = present.mean()
    return [None if a == NO_ANSWER else a for a in distinct], as_labels(values)


@dataclass
class ExpertCheck:
    agree: float = 0.0  # agreements with the truth on probes (anchors)
    total: int = 0  # probe values compared
    probe_groups: int = 0  # its blocks of probes with a right and a wrong answer
    spot_items: int = 0  # blocks it scored as the second expert of a spot check
    spot_values: int = 0  # its labels paired with another expert's on the same answers
    accuracy: float = 2 / 3  # Dawid-Skene's estimate over all evidence (the prior's mean before any)
    flagged_at: int | None = None
    response: str | None = None  # EXCLUDED or CORRECTED once flagged
    peer_agreed: int = 0  # its rewards on the same side as its peers' median (evidence only)
    peer_values: int = 0


def draw(seed: int, step: int, expert_id: str, question_id: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by its arguments (a resumed run draws what the uninterrupted
    one drew, whatever else it did before)."""
    key = f"{seed}|{step}|{expert_id}|{question_id}|{purpose}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class _Slot:
    """One item of a request as sent: the expert's own (`origin` None) or a spot check of `origin`'s
    block (its item number `index` in `origin`'s request)."""

    item: ScoreItem
    origin: str | None = None
    index: int = 0


@dataclass
class RecheckTransport(TransportWrapper):
    """Wraps a transport; see the module docstring. `probes` are the server's labelled probes;
    `competent` per question id the experts judged on it and who may spot-check them, best first
    (`training.calibrate.Routing.competent`; None: every expert is judged everywhere, and nothing is
    spot-checked); `spot_share` the share of each judged block a second one of them also scores, drawn
    from `seed`; `keep` is the probability a released 0/1 value is the true one (1 without local DP)."""

    inner: ExpertTransport
    probes: ProbeBook
    threshold: float
    competent: Mapping[str, Sequence[str]] | None = None
    spot_share: float = 0.0
    seed: int = 0
    keep: float = 1.0
    correct_inverted: bool = True
    journal: Path | None = None
    checks: dict[str, ExpertCheck] = field(default_factory=dict)
    pairs: dict[str, list[list[float]]] = field(default_factory=dict)  # "j|k" -> 2x2 label counts (unknown truth)

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        flagged = [self._flagged(e, step) for e in requests if self._is_excluded(e)]
        live = {e: r for e, r in requests.items() if not self._is_excluded(e)}
        slots = self._with_spot_checks(step, live)
        sent = {e: ScoreRequest(r.step, tuple(s.item for s in slots[e]), r.reads) for e, r in live.items()}
        results = self.inner.score_round(step, sent)
        own: dict[str, tuple[float, ...]] = {}  # expert -> its rewards on its own items
        spotted: list[tuple[str, _Slot, tuple[float, ...]]] = []  # (checker, slot, its rewards there)
        for expert_id, reply in results.replies.items():
            rewards, offset = [], 0
            for slot in slots[expert_id]:
                block = reply.rewards[offset:offset + len(slot.item.candidates)]
                offset += len(slot.item.candidates)
                if slot.origin is None:
                    rewards += block
                else:
                    spotted.append((expert_id, slot, block))
                self._score_probe(expert_id, slot.item, block)
            own[expert_id] = tuple(rewards)
        self._pair_spot_checks(live, own, spotted)
        self._compare_peers(live, own)
        self._judge(step)
        replies: dict[str, ScoreReply] = {}
        failures = list(results.failures) + flagged
        for expert_id, reply in results.replies.items():
            if self._is_excluded(expert_id):
                failures.append(self._flagged(expert_id, step))
            elif self.checks.get(expert_id, ExpertCheck()).response == CORRECTED:
                replies[expert_id] = ScoreReply(reply.step, tuple(r if math.isnan(r) else 1.0 - r for r in own[expert_id]))
            else:
                replies[expert_id] = ScoreReply(reply.step, own[expert_id])
        self._write_journal(step)
        return ScoreResults(replies=replies, failures=tuple(failures))

    def resume(self, before_step: int | None) -> None:
        """Restore the state after the last round of a step before `before_step` (a resumed run's
        checkpoint) from `journal`, dropping later rounds and a last line cut short by a kill; the
        resumed run redoes those rounds. None: a fresh run, the journal starts empty."""
        if self.journal is None:
            return
        state = None
        if before_step is not None and self.journal.is_file():
            for line in self.journal.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # the last line, cut short by a kill
                if record["step"] >= before_step:
                    break
                state = record
        tmp = self.journal.with_suffix(".tmp")  # replaced atomically: a kill now loses nothing
        tmp.write_text("" if state is None else json.dumps(state) + "\n")
        os.replace(tmp, self.journal)
        if state is not None:
            self.checks = {e: ExpertCheck(**c) for e, c in state["checks"].items()}
            self.pairs = {k: [list(row) for row in v] for k, v in state["pairs"].items()}

    def report(self) -> dict[str, dict[str, float | int | bool | None]]:
        """Per expert (every one, checked or not): its evidence (probe groups and values, agreements,
        spot-check items and paired values), its estimated accuracy, whether and when it was flagged,
        and the response."""
        checks = {e: self.checks.get(e, ExpertCheck()) for e in self.expert_ids}
        return {e: {"probe_groups": c.probe_groups, "probe_values": c.total, "agreed": round(c.agree, 2),
                    "spot_items": c.spot_items, "spot_values": c.spot_values, "accuracy": round(c.accuracy, 3),
                    "flagged": c.flagged_at is not None, "flagged_at_step": c.flagged_at, "response": c.response,
                    "peer_values": c.peer_values, "peer_agreed": c.peer_agreed}
                for e, c in checks.items()}

    # -- internals ---------------------------------------------------------------------------------

    def _is_excluded(self, expert_id: str) -> bool:
        check = self.checks.get(expert_id)
        return check is not None and check.response == EXCLUDED

    def _flagged(self, expert_id: str, step: int) -> ExpertFailure:
        """The failure a flagged (excluded) expert's reply is refused as, with its evidence."""
        c = self.checks[expert_id]
        reason = (f"{FLAGGED}: agreed with {c.agree:g} of {c.total} probe values with known answers, "
                  f"{c.spot_values} values paired in spot checks (estimated accuracy {c.accuracy:.2f}, below "
                  f"{self.threshold:g} with 99% probability)")
        return ExpertFailure(expert_id, step, reason, FailureKind.FLAGGED)

    def _judged(self, expert_id: str, question_id: str) -> bool:
        """Whether the routing trusts `expert_id` with the question: elsewhere its honest rewards are a
        non-expert's (a substitute's after a failure, say), and its mistakes no sign of lying."""
        return self.competent is None or expert_id in self.competent.get(question_id, ())

    def _spot_partner(self, step: int, expert_id: str, item: ScoreItem, asked: Mapping[str, ScoreRequest]) -> str | None:
        """The second expert of `expert_id`'s block of `item` this round, or None: not drawn, or no
        other competent expert among those asked this round (a request of spot checks alone would
        stand out)."""
        if (self.competent is None or not self._judged(expert_id, item.question_id)
                or draw(self.seed, step, expert_id, item.question_id, "spot") >= self.spot_share):
            return None
        return next((p for p in self.competent.get(item.question_id, ()) if p != expert_id and p in asked), None)

    def _with_spot_checks(self, step: int, live: Mapping[str, ScoreRequest]) -> dict[str, list[_Slot]]:
        """Each live expert's items as sent: its own, in order, and the spot checks drawn for it,
        each at a drawn position among them."""
        slots = {e: [_Slot(item) for item in r.items] for e, r in live.items()}
        for expert_id, request in live.items():
            for index, item in enumerate(request.items):
                partner = self._spot_partner(step, expert_id, item, live)
                if partner is None:
                    continue
                at = int(draw(self.seed, step, expert_id, item.question_id, "position") * (len(slots[partner]) + 1))
                slots[partner].insert(at, _Slot(item, expert_id, index))
                self.checks.setdefault(partner, ExpertCheck()).spot_items += 1
        return slots

    def _score_probe(self, expert_id: str, item: ScoreItem, rewards: Sequence[float]) -> None:
        """Add one block's values on a probe to its expert's anchored evidence, where it is judged."""
        evidence = self.probes.evidence(item, rewards) if self._judged(expert_id, item.question_id) else None
        if evidence is None:
            return
        agree, total = probe_agreement(*evidence)
        check = self.checks.setdefault(expert_id, ExpertCheck())
        check.agree += agree
        check.total += total
        check.probe_groups += int(total > 0)

    def _pair_spot_checks(self, live: Mapping[str, ScoreRequest], own: Mapping[str, Sequence[float]],
                          spotted: Sequence[tuple[str, _Slot, Sequence[float]]]) -> None:
        """Count each spot check off a question of unknown answer as pairs of labels (the first
        expert's, the checker's) per distinct answer both labelled; on probes both were compared with
        the truth already (`_score_probe`)."""
        for checker, slot, theirs in spotted:
            origin = slot.origin
            assert origin is not None
            if origin not in own or slot.item.question_id in self.probes.questions:
                continue  # the first expert's reply did not arrive, or the truth is known
            start = sum(len(i.candidates) for i in live[origin].items[:slot.index])
            mine = own[origin][start:start + len(slot.item.candidates)]
            answers = [self.probes.extract(c) for c in slot.item.candidates]
            _, first = answer_labels(answers, mine)
            _, second = answer_labels(answers, theirs)
            counts = self.pairs.setdefault(f"{origin}|{checker}", [[0.0, 0.0], [0.0, 0.0]])
            both = ~np.isnan(first) & ~np.isnan(second)
            for x, y in zip(first[both], second[both]):
                counts[int(x)][int(y)] += 1
            for expert_id in (origin, checker):
                self.checks.setdefault(expert_id, ExpertCheck()).spot_values += int(both.sum())

    def _judge(self, step: int) -> None:
        """Dawid-Skene over every expert's evidence, then each expert's reading (module docstring).
        Spot-check pairs count once one of the two experts has proven itself on probes (its accuracy
        surely above the threshold): two experts without anchors that disagree say nothing about
        which one is wrong, and EM would pick one by rounding."""
        ids = list(self.expert_ids)
        if not self.checks:
            return
        position = {e: i for i, e in enumerate(ids)}
        checks = [self.checks.get(e, ExpertCheck()) for e in ids]
        proven = {e for e, c in zip(ids, checks) if surely_above(c.agree, c.total, self.threshold, self.keep)}
        pairs = np.zeros((len(ids), len(ids), 2, 2))
        for key, counts in self.pairs.items():
            origin, checker = key.split("|")
            if origin in proven or checker in proven:
                pairs[position[origin], position[checker]] = counts
        accuracy, agree, total = one_coin_dawid_skene([c.agree for c in checks], [c.total for c in checks], pairs)
        for i, expert_id in enumerate(ids):
            if expert_id not in self.checks:
                continue
            check = self.checks[expert_id]
            check.accuracy = float(accuracy[i])
            if check.response == EXCLUDED or total[i] == 0:
                continue
            if check.response == CORRECTED:
                if surely_above(agree[i], total[i], 1.0 - self.threshold, self.keep):
                    check.response = EXCLUDED  # it stopped inverting: nothing left to recover
                continue
            reading = rater_reading(agree[i], total[i], self.threshold, self.keep)
            if reading != TRUSTED:
                check.flagged_at = step
                check.response = CORRECTED if self.correct_inverted and reading == INVERTED else EXCLUDED

    def _compare_peers(self, requests: Mapping[str, ScoreRequest], own: Mapping[str, Sequence[float]]) -> None:
        """Where several experts scored the same candidates (config score_replication), count each
        one's agreement with the others' median (`core.aggregate.peer_agreement`), on its rewards as
        released. Evidence in the report, not a reason to flag: the experts sharing a question differ
        in competence by design (the graph ranks them), so disagreeing with peers does not separate
        lying from knowing less, or from knowing better; the known answers of the probes do."""
        shared: dict[tuple[str, tuple[str, ...]], dict[str, Sequence[float]]] = {}
        for expert_id, rewards in own.items():
            offset = 0
            for item in requests[expert_id].items:
                n = len(item.candidates)
                shared.setdefault((item.question_id, item.candidates), {})[expert_id] = rewards[offset:offset + n]
                offset += n
        for by_expert in shared.values():
            if len(by_expert) < 3:
                continue
            experts = list(by_expert)
            agreed, compared = peer_agreement(list(zip(*(by_expert[e] for e in experts))))
            for expert_id, a, c in zip(experts, agreed, compared):
                check = self.checks.setdefault(expert_id, ExpertCheck())
                check.peer_agreed += int(a)
                check.peer_values += int(c)

    def _write_journal(self, step: int) -> None:
        if self.journal is not None:
            record = {"step": step, "checks": {e: asdict(c) for e, c in self.checks.items()}, "pairs": self.pairs}
            with self.journal.open("a") as f:
                f.write(json.dumps(record) + "\n")
