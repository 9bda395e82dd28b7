"""DPSDA-FL (Abacha et al. 2024): every client makes a differentially private synthetic set from its
private data by Private Evolution (PE; Lin et al. 2024, microsoft/DPSDA) and uploads it; the server
trains on the pooled synthetic sets (objective SFT or GRPO on their answers).

PE, per client, as its code does it (`pe/population/pe_population.py`, `pe/histogram/nearest_neighbors.py`,
`pe/dp/gaussian.py`), with its two generator calls:

1. RANDOM_API: the server draws N candidates from the foundation model and sends them down;
2. each private item votes for its nearest candidate (character 3-gram embeddings,
   `models.embed`), a histogram with L2 sensitivity 1;
3. the client adds Gaussian noise (sigma = the noise multiplier that spends its epsilon at its delta
   over the T rounds, `privacy.accounting`; drawn from a secret the client makes for the run from
   OS entropy, so the server cannot replay it), zeroes counts below H = `dpsda_threshold` x sigma,
   and sends the noisy histogram up;
4. VARIATION_API: the server draws N parents in proportion to the noisy counts and replaces each by a
   variation of it, the next round's candidates.

After T rounds the client draws its synthetic set as PE's last population is made: parents in
proportion to its last noisy histogram (post-processing: no further privacy cost), each replaced by
a variation; every item once (no padding by duplicates: if the support is too small the set is
smaller, and the report says so). It uploads the set.

The foundation model at laptop scale (`FoundationAPI`): our tiny server model cannot write questions
(it was never trained to; its loss covers answers only), so the domains' generators play it: RANDOM_API
samples fresh items of the configured domains, VARIATION_API one of a parent's nearest fresh items of
the same domain. Fresh means in no split: no item of the server's pool, auxiliary set, public
pre-training pool, client shards, validation, test or probe sets is ever a candidate. Each item comes with
its generator's answer, as a foundation model that always answers right would write it: the
optimistic choice for this baseline.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedgrpo.config import DataConfig, FedGRPOConfig
from fedgrpo.data.partition import Splits
from fedgrpo.data.tasks import Question
from fedgrpo.models.embed import embed_questions
from fedgrpo.privacy.accounting import default_delta, gaussian_epsilon, gaussian_noise_multiplier
from fedgrpo.privacy.mechanisms import gaussian_histogram
from fedgrpo.privacy.secret import ClientSecret

VARIATION_NEIGHBOURS = 8  # a variation of a parent is one of its this many nearest other items
FRESH_SEED_OFFSET = 1_000_003  # the foundation model's stream: a seed no split uses
FRESH_STREAM_LIMIT = 40_000  # items read per domain while looking for fresh ones
FINAL_DRAW_ROUNDS = 20  # draws of the final population before a small support is accepted


def nearest_votes(private: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each private row votes for its nearest candidate row (cosine on l2-normalised rows): counts,
    a histogram of L2 sensitivity 1 (one record, one vote)."""
    if len(candidates) == 0:
        return np.zeros(0)
    nearest = np.argmax(private @ candidates.T, axis=1)
    return np.bincount(nearest, minlength=len(candidates)).astype(float)


def candidate_text(q: Question) -> tuple[str, str]:
    """What a candidate message carries: the item's question and answer texts."""
    return (q.question, q.answer or "")


@dataclass
class PrivateEvolution:
    """One client's PE run: its synthetic set, its privacy, and every message it exchanged
    (round, direction, payload): candidates down, noisy histograms and the synthetic set up."""

    expert_id: str
    synthetic: tuple[Question, ...]
    epsilon: float
    delta: float
    noise_multiplier: float
    messages: list[tuple[int, str, object]] = field(default_factory=list)
    kept_per_round: list[int] = field(default_factory=list)


class FoundationAPI:
    """PE's foundation model (module docstring): fresh items of the domains, with embeddings.

    `items` is a pool of items in no split, a share of each domain; `random_api` draws from it,
    `variation_api` replaces each parent by one of its `VARIATION_NEIGHBOURS` nearest other items of
    the pool."""

    def __init__(self, items: Sequence[Question]) -> None:
        self.items = tuple(items)
        self.vectors = embed_questions([q.question for q in self.items], "ngram").astype(np.float32)
        names = sorted({q.domain for q in self.items})
        self.domain_ids = np.array([names.index(q.domain) for q in self.items])

    @classmethod
    def fresh(cls, data: DataConfig, splits: Splits, per_domain: int, seed: int) -> FoundationAPI:
        """`per_domain` items of each domain that sit in no split (fewer where the domain's item
        space runs out), drawn from a stream seeded apart from every split's."""
        from fedgrpo.data.gym import check_domains, iter_unique_questions

        taken = {q.question for qs in (splits.pool, splits.aux, splits.public, splits.probe) for q in qs}
        taken |= {q.question for s in splits.clients for q in s.questions}
        taken |= {q.question for qs in (*splits.eval.values(), *splits.val.values()) for q in qs}
        items: list[Question] = []
        for domain in check_domains(data.domains, data.difficulty):
            stream = iter_unique_questions(domain, data.difficulty, FRESH_SEED_OFFSET + seed)
            fresh = (q for q in itertools.islice(stream, FRESH_STREAM_LIMIT) if q.question not in taken)
            items += itertools.islice(fresh, per_domain)
        return cls(items)

    def random_api(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.items), size=min(n, len(self.items)), replace=False)

    def variation_api(self, parents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One variation per parent: one of its nearest other items (the same domain's first)."""
        if len(parents) == 0:
            return parents
        sims = self.vectors[parents] @ self.vectors.T
        same = self.domain_ids[parents][:, None] == self.domain_ids[None, :]
        sims = np.where(same, sims, sims - 2.0)  # cosine is in [-1, 1]: another domain is always farther
        sims[np.arange(len(parents)), parents] = -np.inf  # a variation differs from its parent
        k = min(VARIATION_NEIGHBOURS, len(self.items) - 1)
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return nearest[np.arange(len(parents)), rng.integers(0, k, size=len(parents))]

    def next_population(self, population: np.ndarray, histogram: np.ndarray, n: int,
                        rng: np.random.Generator) -> np.ndarray:
        """PE's `next`: n parents drawn in proportion to the noisy counts, each varied (a fresh draw
        when nothing survived the threshold)."""
        if histogram.sum() <= 0:
            return self.random_api(n, rng)
        parents = rng.choice(population, size=n, p=histogram / histogram.sum())
        return self.variation_api(parents, rng)


def private_evolution(config: FedGRPOConfig, expert_id: str, private: Sequence[Question], api: FoundationAPI,
                      seed: int, client_secret: ClientSecret | None = None) -> PrivateEvolution:
    """One client's PE. `seed` drives the server's draws (its candidates and variations); the
    client's noise comes from `client_secret` (default: a fresh one from OS entropy)."""
    b = config.baselines
    delta = b.dpsda_delta if b.dpsda_delta is not None else default_delta(len(private))
    multiplier = gaussian_noise_multiplier(b.dpsda_epsilon, delta, b.dpsda_rounds)
    sigma = multiplier * 1.0  # sensitivity 1: one item, one vote
    server_rng = np.random.default_rng([seed, 0])  # the server's own choices: public by design
    # The client's noise and its final draw: from a secret it makes now and never sends.
    client_rng = (client_secret or ClientSecret.new()).generator("dpsda", expert_id)
    private_vectors = embed_questions([q.question for q in private], "ngram").astype(np.float32)
    population = api.random_api(b.dpsda_candidates, server_rng)
    result = PrivateEvolution(expert_id, (), 0.0, delta, multiplier)
    histogram = np.zeros(len(population))
    for round_index in range(b.dpsda_rounds):
        result.messages.append((round_index, "down", [candidate_text(api.items[i]) for i in population]))
        votes = nearest_votes(private_vectors, api.vectors[population])
        histogram = gaussian_histogram(votes, sigma, b.dpsda_threshold * sigma, client_rng)
        result.messages.append((round_index, "up", tuple(float(h) for h in histogram)))
        result.kept_per_round.append(int((histogram > 0).sum()))
        if round_index < b.dpsda_rounds - 1:
            population = api.next_population(population, histogram, len(population), server_rng)
    result.synthetic = tuple(api.items[i] for i in final_population(api, population, histogram,
                                                                     b.dpsda_synthetic_size, client_rng))
    result.messages.append((b.dpsda_rounds, "up", [candidate_text(q) for q in result.synthetic]))
    result.epsilon = gaussian_epsilon(multiplier, b.dpsda_rounds, delta)
    return result


def final_population(api: FoundationAPI, population: np.ndarray, histogram: np.ndarray, size: int,
                     rng: np.random.Generator) -> list[int]:
    """The client's synthetic set: PE's last `next` (parents in proportion to the last noisy
    histogram, each varied), every item once. Draws continue until `size` distinct items or
    FINAL_DRAW_ROUNDS draws (a draw that repeats items is likely near the end, when it asks for one
    or two: stopping at the first would leave the set short); never padded with duplicates."""
    chosen: dict[int, None] = {}
    for _ in range(FINAL_DRAW_ROUNDS):
        if len(chosen) >= size:
            break
        for i in api.next_population(population, histogram, size - len(chosen), rng).tolist():
            chosen.setdefault(int(i), None)
    return list(chosen)[:size]


def pooled_for_grpo(synthetic: Sequence[Question]) -> tuple[Question, ...]:
    """The pooled synthetic sets as GRPO training questions: each item once (groups are keyed by
    question id), in first-seen order."""
    seen: dict[str, Question] = {}
    for q in synthetic:
        seen.setdefault(q.question_id, q)
    return tuple(seen.values())
