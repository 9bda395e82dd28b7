"""Dishonest or broken experts caught by a periodic re-check on auxiliary items with known answers.

Every `every` scoring rounds, each expert's request carries, after its real items, a few probe items:
auxiliary questions it said it answers correctly at calibration (its own claim), each with two
candidates whose truth the server knows: the gold answer (truth 1) and another item's answer of the
same generator (truth 0). They look like any other item. An honest expert that answers the question
as it did at calibration rewards them (1, 0); one that inverts its rewards (0, 1); one that answers
at random or always 1 agrees half the time.

Each expert's accuracy on probes is estimated by a one-coin Dawid-Skene model (one accuracy per
expert, `core.rater`) whose Beta(2, 1) prior stands for the calibration it passed, from the rewards as
released (under local DP with randomised response, the threshold is moved onto the released scale
first: an honest expert then agrees with probability p_keep, not 1). An
expert's first request carries enough probes for `min_values` probe values, and it is probed every
round until it has them (a liar is judged on its first reply, before any of its rewards is used, not
after `every` rounds), then every `every` rounds. Once it has them, an expert whose
posterior mean falls below `threshold` is flagged, and the evidence is in `report()`:

- *corrected* (with `correct_inverted`) when its accuracy is as far below chance as an honest one's
  is above it (below 1 - threshold): it is anti-correlated with the truth, and the maximum-likelihood
  reading of a one-coin rater with accuracy under 1/2 is the opposite label, so its rewards are used
  as 1 - reward. An inverted reward scale (a bug as much as an attack) then costs nothing. It stays
  probed; should its accuracy rise towards chance (it stopped inverting), it is excluded;
- *excluded* otherwise (random or always-1 rewards carry nothing to recover): its replies are
  refused as a failure of kind FLAGGED (`FailoverTransport`, outside this one, then loses it and
  sends its questions to the next-best expert).

Correcting gives a liar no power it lacks anyway: one that can tell probes from real items could
already answer probes honestly and invert the rest. With `journal`, the state after every round is
appended to a file; a resumed run restores the last state before its checkpoint (`resume`).

Where several experts score the same candidates (config score_replication), each one's agreement
with its peers' median is counted and reported next to its probes (`peer_values`, `peer_agreed`), as
evidence, not as a reason to flag (`_compare_peers` says why); the robust aggregation (median) is
what keeps one liar among three or more from moving a reward.

Limits: a colluding expert that recognises probes (it saw the auxiliary questions at calibration) can
answer them honestly and lie elsewhere; only its peer agreement then shows it, with
score_replication on.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedgrpo.core.aggregate import peer_agreement
from fedgrpo.core.rater import INVERTED, TRUSTED, one_coin_accuracy, probe_agreement, rater_reading
from fedgrpo.transport.base import ExpertTransport, TransportWrapper
from fedgrpo.types import (
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
class Probe:
    """One probe item: the question and its two candidates, with their truth (1 then 0)."""

    item: ScoreItem
    truth: tuple[float, ...]


@dataclass
class ExpertCheck:
    agree: float = 0.0
    total: int = 0
    flagged_at: int | None = None
    response: str | None = None  # EXCLUDED or CORRECTED once flagged
    peer_agreed: int = 0  # its rewards on the same side as its peers' median (evidence only)
    peer_values: int = 0

    @property
    def accuracy(self) -> float:
        return float(one_coin_accuracy(self.agree, self.total))


@dataclass
class RecheckTransport(TransportWrapper):
    """Wraps a transport; see the module docstring. `probes` are each expert's probe items (its
    claimed-correct auxiliary items, cycled); `keep` is the probability a released 0/1 value is the
    true one (1 without local DP)."""

    inner: ExpertTransport
    probes: Mapping[str, Sequence[Probe]]
    every: int
    per_check: int
    threshold: float
    min_values: int = 8
    keep: float = 1.0
    correct_inverted: bool = True
    journal: Path | None = None
    checks: dict[str, ExpertCheck] = field(default_factory=dict)
    _cursor: dict[str, int] = field(default_factory=dict)
    _rounds: int = 0

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        periodic = self.every > 0 and self._rounds % self.every == 0
        self._rounds += 1
        flagged = [self._flagged(e, step) for e in requests if self._is_excluded(e)]
        live = {e: r for e, r in requests.items() if not self._is_excluded(e)}
        added: dict[str, list[Probe]] = {e: self._next_probes(e) if periodic or self._unproven(e) else []
                                         for e in live}
        sent = {e: ScoreRequest(r.step, r.items + tuple(p.item for p in added[e])) for e, r in live.items()}
        results = self.inner.score_round(step, sent)
        replies: dict[str, ScoreReply] = {}
        failures = list(results.failures) + flagged
        self._compare_peers(requests, results.replies)
        for expert_id, reply in results.replies.items():
            n = requests[expert_id].num_candidates
            self._score_probes(expert_id, step, reply.rewards[n:], added[expert_id])
            rewards = reply.rewards[:n]
            if self._is_excluded(expert_id):
                failures.append(self._flagged(expert_id, step))
            elif self.checks[expert_id].response == CORRECTED:
                replies[expert_id] = ScoreReply(reply.step, tuple(r if math.isnan(r) else 1.0 - r for r in rewards))
            else:
                replies[expert_id] = ScoreReply(reply.step, rewards)
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
            self._rounds, self._cursor = state["rounds"], dict(state["cursor"])
            self.checks = {e: ExpertCheck(**c) for e, c in state["checks"].items()}

    def report(self) -> dict[str, dict[str, float | int | bool | None]]:
        """Per expert (every one, probed or not): probe values, agreements, estimated accuracy, flag."""
        checks = {e: self.checks.get(e, ExpertCheck()) for e in self.expert_ids}
        return {e: {"probe_values": c.total, "agreed": round(c.agree, 2), "accuracy": round(c.accuracy, 3),
                    "flagged": c.flagged_at is not None, "flagged_at_step": c.flagged_at, "response": c.response,
                    "peer_values": c.peer_values, "peer_agreed": c.peer_agreed,
                    "probe_items": len(self.probes.get(e, ()))}
                for e, c in checks.items()}

    # -- internals ---------------------------------------------------------------------------------

    def _is_excluded(self, expert_id: str) -> bool:
        check = self.checks.get(expert_id)
        return check is not None and check.response == EXCLUDED

    def _unproven(self, expert_id: str) -> bool:
        """Fewer than `min_values` probe values: probed every round until it has them."""
        return self.every > 0 and self.checks.get(expert_id, ExpertCheck()).total < self.min_values

    def _flagged(self, expert_id: str, step: int) -> ExpertFailure:
        """The failure a flagged (excluded) expert's reply is refused as, with its evidence."""
        c = self.checks[expert_id]
        reason = (f"{FLAGGED}: agreed with {c.agree:g} of {c.total} probe values with known answers "
                  f"(estimated accuracy {c.accuracy:.2f} < {self.threshold:g})")
        return ExpertFailure(expert_id, step, reason, FailureKind.FLAGGED)

    def _compare_peers(self, requests: Mapping[str, ScoreRequest], replies: Mapping[str, ScoreReply]) -> None:
        """Where several experts scored the same candidates (config score_replication), count each
        one's agreement with the others' median (`core.aggregate.peer_agreement`), on its rewards as
        released. Evidence in the report, not a reason to flag: the experts sharing a question differ
        in competence by design (the graph ranks them), so disagreeing with peers does not separate
        lying from knowing less, or from knowing better; the known answers of the probes do."""
        shared: dict[tuple[str, tuple[str, ...]], dict[str, tuple[float, ...]]] = {}
        for expert_id, reply in replies.items():
            offset = 0
            for item in requests[expert_id].items:
                n = len(item.candidates)
                shared.setdefault((item.question_id, item.candidates), {})[expert_id] = reply.rewards[offset:offset + n]
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
            record = {"step": step, "rounds": self._rounds, "cursor": self._cursor,
                      "checks": {e: asdict(c) for e, c in self.checks.items()}}
            with self.journal.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _next_probes(self, expert_id: str) -> list[Probe]:
        """`per_check` probes, or as many as an unproven expert needs to reach `min_values` at once
        (its first reply is then judged before any of its rewards is used), the pool cycled."""
        pool = self.probes.get(expert_id, ())
        if not pool:
            return []
        missing = self.min_values - self.checks.get(expert_id, ExpertCheck()).total
        count = max(self.per_check, math.ceil(missing / len(pool[0].truth)))
        start = self._cursor.get(expert_id, 0)
        self._cursor[expert_id] = start + count
        return [pool[(start + i) % len(pool)] for i in range(min(count, len(pool)))]

    def _score_probes(self, expert_id: str, step: int, rewards: Sequence[float], probes: Sequence[Probe]) -> None:
        agree, total = probe_agreement(rewards, [t for p in probes for t in p.truth])
        check = self.checks.setdefault(expert_id, ExpertCheck())
        check.agree += agree
        check.total += total
        if check.total < self.min_values or check.response == EXCLUDED:
            return
        # Read on the released values' scale: under randomised response an honest expert agrees
        # with probability keep, not 1 (`core.rater.rater_reading`).
        reading = int(rater_reading(check.accuracy, self.threshold, self.keep))
        if check.response == CORRECTED:
            if reading != INVERTED:  # no longer inverting: nothing to recover, exclude it
                check.response = EXCLUDED
        elif reading != TRUSTED:
            check.flagged_at = step
            check.response = CORRECTED if self.correct_inverted and reading == INVERTED else EXCLUDED


def build_probes(aux: Sequence[tuple[str, str, str, str]], claimed: Mapping[str, Sequence[bool]],
                 completion: Callable[[str], str]) -> dict[str, list[Probe]]:
    """Each expert's probes: the auxiliary items (question id, generator, question, answer) it
    claimed at calibration, each with its gold answer and the next item's different answer of the same
    generator as candidates, rendered as completions by `completion`."""
    by_generator: dict[str, list[str]] = {}
    for _, generator, _, answer in aux:
        by_generator.setdefault(generator, []).append(answer)
    items: list[Probe | None] = []
    for qid, generator, question, answer in aux:
        wrong = next((a for a in by_generator[generator] if a.strip() != answer.strip()), None)
        if wrong is None:
            items.append(None)
            continue
        items.append(Probe(ScoreItem(qid, generator, question, (completion(answer), completion(wrong))), (1.0, 0.0)))
    return {e: [p for p, ok in zip(items, bits) if ok and p is not None] for e, bits in claimed.items()}
