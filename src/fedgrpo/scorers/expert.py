"""An expert in this process: a client's private data, its expert model and its scorer, behind the
calls of the `transport.base.Expert` protocol.

`calibrate` answers the auxiliary questions with the expert model and returns one correctness bit per
item (its row of the confidence graph). `score` returns one raw reward per candidate, chosen by the
paper's gate lambda, decided here on the client and never reported:

- answer-based (AE): the client's private store holds this question (matched by question id, else by
  its text) with a trusted answer -> reward = 1 if the candidate's answer agrees with it;
- model-based (ME): otherwise the expert model answers the question itself (greedy by default, or the
  majority of `expert_samples` draws) -> reward = 1 if the candidate agrees with the expert.

The expert's answer to a question is computed once and reused for every candidate and every later
request that repeats the question. Any `Scorer` callable can replace the built-in logic.

What it reads (declared in its hello, `types.Reads`; the server sends what is declared): the
built-in scoring compares final answers only, so it reads ANSWERS: each question's distinct final
answers, extracted by the server, with NO_ANSWER for a candidate without one, which agrees with
nothing, exactly as `scorers.verifier.score_against` scores such a candidate. Given full texts (a
server that sends them), it extracts the answers itself, as before: the same rewards either way. A
plug-in `scorer` reads TEXTS (every candidate's full text) unless it declares otherwise (its own
`reads` attribute, or the `reads` argument).

With label DP (`labels`, the client's `privacy.client.ClientPrivacy`), answer-based scoring reads a
label randomised once per record (RRWithPrior, its prior the expert model's own sampled answers to
the question, which do not depend on the label) instead of the label itself. Every other privacy
mechanism acts outside the scorer: DP-SGD when the model was trained, per-value noise in the
client's `privacy.client.PrivateExpert` wrapper.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.config import SCORER_MODES
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.data.tasks import Question
from fedgrpo.scorers.base import Scorer, ScorerError
from fedgrpo.scorers.verifier import answers_agree, score_against
from fedgrpo.types import (
    NO_ANSWER,
    REWARD_MAX,
    REWARD_MIN,
    CalibrationReply,
    CalibrationRequest,
    Hello,
    Reads,
    ScoreItem,
    ScoreReply,
    ScoreRequest,
    reward_in_range,
)

LABEL_PRIOR_SAMPLES = 16  # label DP: the expert's sampled answers that form a label's prior


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


class LocalExpert:
    """One client's expert. Holds its data and model privately; exposes only `hello`, `calibrate`
    and `score`."""

    def __init__(
        self,
        expert_id: str,
        private_data: Sequence[Question],
        model_dir: Path,
        *,
        mode: str,
        style: PromptStyle,
        expert_samples: int,
        max_new_tokens: int,
        batch_size: int,
        seed: int,
        domain: str | None = None,
        scorer: Scorer | None = None,
        labels: Any = None,
        guarantee: dict[str, Any] | None = None,
        reads: Reads | str | None = None,
    ) -> None:
        """The scorer settings come from the config (`engines.experts.make_local_expert`): `mode`
        (the config's scorer_mode), the prompt `style` (the expert answers as the server does),
        `expert_samples`, and the generation's `max_new_tokens`, `batch_size` and `seed`. `domain`
        is the one it declares (default: its data's main one); `scorer` replaces the built-in
        scoring; `labels` (a `privacy.client.ClientPrivacy` with label DP) randomises each label
        once before answer-based scoring reads it; `guarantee` is the record-level DP its model was
        trained with (declared in its hello; None: none); `reads` what its scorer reads (default:
        ANSWERS for the built-in scoring, the plug-in scorer's own `reads` attribute, else TEXTS)."""
        if mode not in SCORER_MODES:
            raise ValueError(f"unknown scorer mode {mode!r}: use one of {', '.join(SCORER_MODES)}")
        self.expert_id = expert_id
        # The domain it declares: given, else the one its private data holds most of.
        counts = Counter(q.domain for q in private_data)
        self.domain = domain or (counts.most_common(1)[0][0] if counts else "")
        self._by_id = {q.question_id: q.answer for q in private_data if q.answer is not None}
        self._by_text = {_normalise(q.question): q.answer for q in private_data if q.answer is not None}
        self._model_dir = model_dir
        self._mode = mode
        self._style = style
        self._samples = expert_samples
        self._max_new_tokens = max_new_tokens
        self._batch_size = batch_size
        self._seed = seed
        self._custom = scorer
        if reads is None:
            reads = getattr(scorer, "reads", Reads.TEXTS) if scorer is not None else Reads.ANSWERS
        self.reads = Reads(reads)
        self._loaded: tuple[Any, Any] | None = None  # (model, tokenizer), loaded on first use
        self._expert_answers: dict[str, str | None] = {}
        self._lock = threading.Lock()  # one request at a time per client: the model is not re-entrant
        self._labels = labels
        self._guarantee = guarantee

    # -- the calls a server may make ------------------------------------------------------------

    def hello(self) -> Hello:
        privacy: dict[str, Any] = {"records": self._guarantee} if self._guarantee else {}
        if self._labels is not None:
            privacy["labels"] = self._labels.declaration()["labels"]
        return Hello(self.expert_id, self.domain, privacy, self.reads)

    def calibrate(self, request: CalibrationRequest) -> CalibrationReply:
        with self._lock:
            answers = self._expert_answer_batch(
                [(i.question_id, i.question) for i in request.items]
            )
        return CalibrationReply(tuple(
            1.0 if answers_agree(i.generator, i.question, answers[i.question_id], i.answer) else 0.0
            for i in request.items))

    def score(self, request: ScoreRequest) -> ScoreReply:
        """One raw reward per candidate of `request` (per distinct answer in ANSWERS form)."""
        if request.reads is Reads.ANSWERS and self.reads is Reads.TEXTS:
            raise ScorerError(f"{self.expert_id}: its scorer reads full texts, and was sent final answers only")
        with self._lock:
            rows = (self._custom(request.items) if self._custom
                    else self._score_items(request.items, request.reads))
        if len(rows) != len(request.items) or any(
            len(r) != len(i.candidates) for r, i in zip(rows, request.items)
        ):
            raise ScorerError(
                f"{self.expert_id}: scorer returned the wrong number of rewards for step {request.step}"
            )
        flat = tuple(float("nan") if r is None else float(r) for row in rows for r in row)
        bad = [r for r in flat if not reward_in_range(r)]
        if bad:  # the client side of the reply contract: nothing outside the declared range leaves
            raise ScorerError(f"{self.expert_id}: scorer returned reward {bad[0]!r} outside "
                              f"[{REWARD_MIN:g}, {REWARD_MAX:g}] (None for no reward)")
        return ScoreReply(step=request.step, rewards=flat)

    # -- internals -----------------------------------------------------------------------------

    def trusted_answer(self, item: ScoreItem) -> str | None:
        if self._mode == "model":
            return None
        answer = self._by_id.get(item.question_id)
        return answer if answer is not None else self._by_text.get(_normalise(item.question))

    def _score_items(self, items: Sequence[ScoreItem], reads: Reads = Reads.TEXTS) -> list[list[float | None]]:
        references: dict[str, str | None] = {}
        need_model = []
        noisy = self._noisy_labels(items) if self._labels is not None else {}
        for item in items:
            trusted = noisy[item.question_id] if item.question_id in noisy else self.trusted_answer(item)
            if trusted is not None:
                references[item.question_id] = trusted
            elif self._mode == "answer":
                references[item.question_id] = None  # AE only and no label: cannot score
            else:
                need_model.append((item.question_id, item.question))
        references.update(self._expert_answer_batch(need_model))
        rows: list[list[float | None]] = []
        for item in items:
            ref = references[item.question_id]
            if ref is None and self._mode == "answer":
                rows.append([None] * len(item.candidates))
            elif reads is Reads.ANSWERS:  # the final answers, extracted by the server
                rows.append([1.0 if answers_agree(item.generator, item.question, None if a == NO_ANSWER else a, ref)
                             else 0.0 for a in item.candidates])
            else:
                rows.append([score_against(item.generator, item.question, c, ref, self._style)
                             for c in item.candidates])
        return rows

    def _noisy_labels(self, items: Sequence[ScoreItem]) -> dict[str, str | None]:
        """Label DP: each held label randomised once (journalled by the client), with a prior from
        the expert model's sampled answers; question id -> the noisy label (None: nothing to answer
        among, treated as unlabelled)."""
        from fedgrpo.privacy.client import LABEL, value_key

        held = {i.question_id: (i, self.trusted_answer(i)) for i in items}
        held = {qid: (i, a) for qid, (i, a) in held.items() if a is not None}
        keys = {qid: value_key(LABEL, i.generator, i.question, "") for qid, (i, _) in held.items()}
        todo = [(qid, i.question) for qid, (i, _) in held.items() if not self._labels.has_noisy_label(keys[qid])]
        priors = self._answer_samples(todo, LABEL_PRIOR_SAMPLES) if todo else {}
        out = {}
        for qid, (item, answer) in held.items():
            prior = Counter(a for a in priors.get(qid, ()) if a is not None)
            out[qid] = self._labels.noisy_label(keys[qid], answer, {a: float(n) for a, n in prior.items()})
        return out

    def _answer_samples(self, questions: Sequence[tuple[str, str]], samples: int) -> dict[str, list[str | None]]:
        """`samples` answers per question from the expert model at temperature 1 (seeded)."""
        from fedgrpo.models.generate import generate_completions

        model, tokenizer = self._load()
        outs = generate_completions(model, tokenizer, [self._style.prompt(text) for _, text in questions],
                                    max_new_tokens=self._max_new_tokens, num_samples=samples, temperature=1.0,
                                    batch_size=self._batch_size, seed=self._seed)
        return {qid: [self._style.extract(c) for c in cs] for (qid, _), cs in zip(questions, outs)}

    def _expert_answer_batch(self, questions: Sequence[tuple[str, str]]) -> dict[str, str | None]:
        """The expert model's final answer per question id, computed once per question."""
        todo = [(qid, text) for qid, text in dict(questions).items() if qid not in self._expert_answers]
        if todo:
            from fedgrpo.models.generate import generate_completions

            model, tokenizer = self._load()
            prompts = [self._style.prompt(text) for _, text in todo]
            if self._samples <= 1:
                outs = generate_completions(model, tokenizer, prompts, max_new_tokens=self._max_new_tokens,
                                            batch_size=self._batch_size)
            else:
                outs = generate_completions(model, tokenizer, prompts, max_new_tokens=self._max_new_tokens,
                                            num_samples=self._samples, temperature=1.0,
                                            batch_size=self._batch_size, seed=self._seed)
            for (qid, _), completions in zip(todo, outs):
                self._expert_answers[qid] = _majority([self._style.extract(c) for c in completions])
        return {qid: self._expert_answers[qid] for qid, _ in questions}

    def warm_up(self) -> None:
        """Load the expert model now rather than at the first request (a long-lived service)."""
        self._load()

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from fedgrpo.models.load import load_model

            self._loaded = load_model(self._model_dir)
        return self._loaded


def _majority(answers: Sequence[str | None]) -> str | None:
    """Most common non-empty answer; ties go to the first drawn (deterministic given the seed)."""
    valid = [a for a in answers if a is not None]
    return Counter(valid).most_common(1)[0][0] if valid else None
