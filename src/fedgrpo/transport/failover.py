"""Failover: a lost expert's questions go to the next-best expert by competence; training goes on.

`FailoverTransport` wraps any transport. When an expert fails a scoring request (it raised, timed
out, replied for another step or with the wrong shape), it is marked *lost* for the rest of the run:

1. this step, each of its questions is re-sent, in a second request of the same step, to the best
   expert in that question's ranking (the confidence graph's order) that is neither lost nor already
   scoring that question; the substitute's rewards are returned in the lost expert's place, so the
   federated group keeps its M*G rewards;
2. later steps send its questions straight to their substitutes, without waiting for a timeout again.

Every failure stays in `.failures` (the run report counts them per expert), the one that lost an
expert is kept in `lost` (its kind says why: a spent privacy budget, a flag, a timeout...), and
every re-routed question is counted in `rerouted`. A question with no expert left keeps NaN rewards
(advantage 0). The ledger is the wrapped transport's: substitutes' messages are counted under their
own ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedgrpo.transport.base import ExpertTransport, TransportWrapper
from fedgrpo.types import ExpertFailure, ScoreItem, ScoreReply, ScoreRequest, ScoreResults


class FailoverTransport(TransportWrapper):
    def __init__(self, inner: ExpertTransport, ranking: Mapping[str, Sequence[str]]) -> None:
        """`ranking`: question_id -> every expert id, best first (`training.calibrate.Routing.ranking`)."""
        super().__init__(inner)
        self.ranking = ranking
        self.lost: dict[str, ExpertFailure] = {}  # expert id -> the failure that lost it
        self.rerouted: dict[str, int] = {}  # lost expert id -> questions sent to a substitute

    def score_round(self, step: int, requests: Mapping[str, ScoreRequest]) -> ScoreResults:
        holders = _holders(requests)
        live = {e: r for e, r in requests.items() if e not in self.lost}
        results = self.inner.score_round(step, live) if live else ScoreResults()
        replies = dict(results.replies)
        failures = list(results.failures)
        for failure in results.failures:
            self.lost.setdefault(failure.expert_id, failure)
        # Lost experts (now or earlier) get substitutes; a substitute that fails is lost in turn, so
        # each pass either fills questions or loses an expert: the loop ends.
        got: dict[str, dict[str, tuple[float, ...]]] = {}  # lost expert -> question -> rewards
        pending = {e: list(r.items) for e, r in requests.items() if e not in replies}
        while pending:
            plan = self._substitutes(pending, holders)
            if not plan:
                break
            sent = self.inner.score_round(step, {s: ScoreRequest(step, tuple(i for _, i in jobs))
                                           for s, jobs in plan.items()})
            failures.extend(sent.failures)
            for failure in sent.failures:
                self.lost.setdefault(failure.expert_id, failure)
            if not sent.replies and not sent.failures:
                break  # a transport that answers nothing at all: no progress possible
            for substitute, jobs in plan.items():
                reply = sent.replies.get(substitute)
                if reply is None:
                    continue
                offset = 0
                for lost_id, item in jobs:
                    n = len(item.candidates)
                    got.setdefault(lost_id, {})[item.question_id] = reply.rewards[offset:offset + n]
                    offset += n
                    self.rerouted[lost_id] = self.rerouted.get(lost_id, 0) + 1
            pending = {e: [i for i in items if i.question_id not in got.get(e, {})]
                       for e, items in pending.items()}
            pending = {e: items for e, items in pending.items() if items}
        for lost_id, by_question in got.items():
            # Questions no expert could take keep NaN rewards (advantage 0).
            replies[lost_id] = ScoreReply(step, tuple(
                r for item in requests[lost_id].items
                for r in by_question.get(item.question_id, (float("nan"),) * len(item.candidates))))
        return ScoreResults(replies=replies, failures=tuple(failures))

    def _substitutes(self, pending: Mapping[str, Sequence[ScoreItem]],
                     holders: dict[str, set[str]]) -> dict[str, list[tuple[str, ScoreItem]]]:
        """substitute expert -> [(lost expert, item)] for every pending item that has one. A question
        never goes to an expert that already scores it (its group needs distinct experts)."""
        plan: dict[str, list[tuple[str, ScoreItem]]] = {}
        for lost_id, items in pending.items():
            for item in items:
                busy = holders.get(item.question_id, set())
                for candidate in self.ranking.get(item.question_id, ()):
                    if candidate not in self.lost and candidate not in busy and candidate != lost_id:
                        plan.setdefault(candidate, []).append((lost_id, item))
                        busy = busy | {candidate}
                        holders[item.question_id] = busy
                        break
        return plan


def _holders(requests: Mapping[str, ScoreRequest]) -> dict[str, set[str]]:
    """question_id -> the experts asked to score it this step."""
    out: dict[str, set[str]] = {}
    for expert_id, request in requests.items():
        for item in request.items:
            out.setdefault(item.question_id, set()).add(expert_id)
    return out
