"""DPSDA-FL (Abacha et al. 2024): every client makes a differentially private synthetic set from its
private data by Private Evolution (PE; Lin et al. 2024, microsoft/DPSDA) and uploads it; the server
trains on the pooled synthetic sets (objective SFT or GRPO on their answers).

PE, per client, as its code does it (`pe/histogram/nearest_neighbors.py`, `pe/dp/gaussian.py`):

1. the server draws N candidates from its generator and sends them down;
2. each private item votes for its nearest candidate (character 3-gram embeddings,
   `models.embed`), a histogram with L2 sensitivity 1;
3. the client adds Gaussian noise (sigma = the noise multiplier that spends its epsilon at its delta
   over the T rounds, `privacy.accounting`; drawn from a secret the client makes for the run from
   OS entropy, so the server cannot replay it), zeroes counts below H = `dpsda_threshold` x sigma,
   and sends the noisy histogram up;
4. the server keeps the winners in proportion to their noisy counts and makes variations of them
   (a winner replaced by one of its nearest other generator items) for the next round.

After T rounds the client draws its synthetic set from the last population in proportion to its
last noisy histogram (post-processing: no further privacy cost) and uploads it.

The generator at laptop scale is the server's labelled public pool (our tiny model cannot write
questions; a foundation model would sample them): a candidate is a public (question, answer) item,
so the synthetic set carries answers without any client labelling anything. What PE adds is the
choice: which public items look like each client's private data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedgrpo.config import FedGRPOConfig
from fedgrpo.data.tasks import Question
from fedgrpo.models.embed import embed_questions
from fedgrpo.privacy.accounting import default_delta, gaussian_epsilon, gaussian_noise_multiplier
from fedgrpo.privacy.mechanisms import gaussian_histogram
from fedgrpo.privacy.secret import ClientSecret

VARIATION_NEIGHBOURS = 8  # a variation of a winner is one of its this many nearest other generator items


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


class Generator:
    """The server's candidate source: items with embeddings, and nearest-neighbour variations."""

    def __init__(self, items: Sequence[Question]) -> None:
        self.items = tuple(items)
        self.vectors = embed_questions([q.question for q in self.items], "ngram").astype(np.float32)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.items), size=min(n, len(self.items)), replace=False)

    def vary(self, winners: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n new candidates: a winner drawn in proportion to `weights`, then one of its nearest items."""
        if weights.sum() <= 0:  # nothing survived the threshold: start afresh
            return self.draw(n, rng)
        parents = rng.choice(winners, size=n, p=weights / weights.sum())
        sims = self.vectors[parents] @ self.vectors.T
        sims[np.arange(n), parents] = -np.inf  # a variation differs from its parent
        k = min(VARIATION_NEIGHBOURS, len(self.items) - 1)
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return nearest[np.arange(n), rng.integers(0, k, size=n)]


def private_evolution(config: FedGRPOConfig, expert_id: str, private: Sequence[Question], generator: Generator,
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
    population = generator.draw(b.dpsda_candidates, server_rng)
    result = PrivateEvolution(expert_id, (), 0.0, delta, multiplier)
    histogram = np.zeros(len(population))
    for round_index in range(b.dpsda_rounds):
        result.messages.append((round_index, "down", [candidate_text(generator.items[i]) for i in population]))
        votes = nearest_votes(private_vectors, generator.vectors[population])
        histogram = gaussian_histogram(votes, sigma, b.dpsda_threshold * sigma, client_rng)
        result.messages.append((round_index, "up", tuple(float(h) for h in histogram)))
        result.kept_per_round.append(int((histogram > 0).sum()))
        if round_index < b.dpsda_rounds - 1:
            population = generator.vary(population, histogram, len(population), server_rng)
    weights = histogram if histogram.sum() > 0 else np.ones(len(population))
    chosen = client_rng.choice(population, size=b.dpsda_synthetic_size, p=weights / weights.sum())
    result.synthetic = tuple(generator.items[i] for i in chosen)
    result.messages.append((b.dpsda_rounds, "up", [candidate_text(q) for q in result.synthetic]))
    result.epsilon = gaussian_epsilon(multiplier, b.dpsda_rounds, delta)
    return result


def pooled_for_grpo(synthetic: Sequence[Question]) -> tuple[Question, ...]:
    """The pooled synthetic sets as GRPO training questions: each item once (groups are keyed by
    question id), in first-seen order."""
    seen: dict[str, Question] = {}
    for q in synthetic:
        seen.setdefault(q.question_id, q)
    return tuple(seen.values())
