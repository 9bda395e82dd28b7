"""The confidence graph: per-question expert competence from auxiliary neighbours (paper Eqs. 5-6).

Notation: K experts, N = |D_p| labelled auxiliary items, d the embedding width, P query questions,
L neighbours per question.

The paper has no graph object; its "graph" is two relations (docs: paper.md section 2):

- question -> auxiliary neighbours: the L most cosine-similar auxiliary items (Eq. 5), on
  l2-normalised embeddings z = phi(x) (Algorithm 1, line 1);
- expert -> auxiliary item: ``correctness[k, n] = 1[e_k(x_n) = y_n]``, one bit per (expert, item).

Competence (Eq. 6's input): r^p_k(x_p) = (1/L) sum_{l=1..L} 1[e_k(x_{p,l}) = y_{p,l}].

D_p is fixed and the experts are frozen while the server trains, so one calibration round yields the
K x N correctness matrix and every later competence is a local kNN lookup plus a row mean.

Choices where the paper is silent: L larger than N is clamped to N; neighbours with equal similarity
are ordered by lower auxiliary index (a stable sort); no neighbour weighting; correctness is binary.

Example
-------
>>> import numpy as np
>>> graph = build_confidence_graph(
...     expert_ids=["add", "mul"], aux_ids=["a0", "a1", "a2"], aux_domains=["add", "add", "mul"],
...     aux_embeddings=np.array([[1.0, 0.0], [2.0, 0.2], [0.0, 3.0]]),
...     correctness=np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
>>> graph.neighbours(np.array([[1.0, 0.1]]), 2)
array([[1, 0]])
>>> graph.competences(np.array([[1.0, 0.1]]), 2)
array([[1. , 0.5]])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedgrpo.durable import write_atomic
from fedgrpo.errors import ConfigError, FedGRPOError

JSON_FORMAT = "fedgrpo.confidence_graph"
JSON_VERSION = 1
# Rows already this close to unit length are kept bit for bit, so a saved graph loads exactly.
_UNIT_TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class ConfidenceGraph:
    """Auxiliary embeddings (N, d), l2-normalised on construction, and expert correctness (K, N).

    Arrays are stored as read-only float64 copies. Compare graphs field by field (or by
    ``to_json()``); ``==`` is identity because arrays have no single truth value.
    """

    expert_ids: tuple[str, ...]
    aux_ids: tuple[str, ...]
    aux_domains: tuple[str, ...]
    aux_embeddings: NDArray[np.float64]  # (N, d), unit rows
    correctness: NDArray[np.float64]  # (K, N), 0.0 or 1.0

    def __post_init__(self) -> None:
        for name in ("expert_ids", "aux_ids", "aux_domains"):
            if isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a sequence of strings, not one string")
        experts, aux, domains = tuple(self.expert_ids), tuple(self.aux_ids), tuple(self.aux_domains)
        emb = np.array(self.aux_embeddings, dtype=np.float64)  # (N, d), a private copy
        correct = np.array(self.correctness, dtype=np.float64)  # (K, N)
        _check_ids("expert_ids", experts)
        _check_ids("aux_ids", aux)
        N = len(aux)
        if len(domains) != N:
            raise ConfigError(
                f"aux_domains needs one domain per auxiliary item ({N}); got {len(domains)}"
            )
        if emb.ndim != 2 or emb.shape[0] != N or emb.shape[1] == 0:
            raise ConfigError(f"aux_embeddings must have shape (N={N}, d>=1); got {emb.shape}")
        if correct.shape != (len(experts), N):
            raise ConfigError(
                f"correctness must have shape (K={len(experts)}, N={N}): one row per expert, one "
                f"column per auxiliary item; got {correct.shape}"
            )
        if not np.isin(correct, (0.0, 1.0)).all():
            raise ConfigError("correctness must hold only 0.0 and 1.0; binarise graded scores")
        emb = _unit_rows(emb, "aux_embeddings")
        emb.setflags(write=False)
        correct.setflags(write=False)
        for name, value in (("expert_ids", experts), ("aux_ids", aux), ("aux_domains", domains),
                            ("aux_embeddings", emb), ("correctness", correct)):
            object.__setattr__(self, name, value)  # frozen: store the checked values once

    def neighbours(self, z: ArrayLike, L: int) -> NDArray[np.intp]:
        """Indices (P, min(L, N)) of the most cosine-similar auxiliary items, most similar first."""
        query = np.asarray(z, dtype=np.float64)  # (P, d)
        d = self.aux_embeddings.shape[1]
        if query.ndim != 2 or query.shape[1] != d:
            raise ConfigError(f"query embeddings must have shape (P, d={d}); got {query.shape}")
        if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 1:
            raise ConfigError(f"neighbours (L) must be an integer >= 1; got {L!r}")
        similarity = _unit_rows(query, "query embeddings") @ self.aux_embeddings.T  # (P, N) cosine
        # Stable sort of the negated similarity: most similar first, equal ones by lower index.
        order = np.argsort(-similarity, axis=1, kind="stable")  # (P, N)
        return order[:, : min(L, len(self.aux_ids))]  # (P, L), L clamped to N

    def competences(self, z: ArrayLike, L: int) -> NDArray[np.float64]:
        """Competence (P, K): each expert's mean correctness on each question's L neighbours."""
        near = self.neighbours(z, L)  # (P, L)
        return self.correctness[:, near].mean(axis=2).T  # (K, P, L) -> (K, P) -> (P, K)

    def overall(self) -> NDArray[np.float64]:
        """Competence (K,) on the whole auxiliary set: the tie-break of top-M selection."""
        return self.correctness.mean(axis=1)  # (K,)

    def per_domain(self) -> dict[str, dict[str, float]]:
        """Competence of each expert on each auxiliary domain (domains sorted by name)."""
        domains = np.asarray(self.aux_domains, dtype=object)  # (N,)
        names = sorted(set(self.aux_domains))
        return {
            expert: {name: float(row[domains == name].mean()) for name in names}
            for expert, row in zip(self.expert_ids, self.correctness)
        }

    def to_json(self) -> str:
        """Readable JSON (plain lists of floats) that ``from_json`` turns into an equal graph."""
        payload = {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "expert_ids": list(self.expert_ids),
            "aux_ids": list(self.aux_ids),
            "aux_domains": list(self.aux_domains),
            "aux_embeddings": self.aux_embeddings.tolist(),  # repr of float64: exact round trip
            "correctness": self.correctness.tolist(),
        }
        return json.dumps(payload, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ConfidenceGraph:
        """Rebuild a graph from ``to_json`` output; errors say what is missing."""
        try:
            payload: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FedGRPOError(f"confidence graph is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != JSON_FORMAT:
            raise FedGRPOError(f"not a confidence graph: expected \"format\": \"{JSON_FORMAT}\"")
        if payload.get("version") != JSON_VERSION:
            raise FedGRPOError(
                f"confidence graph version {payload.get('version')!r} is not supported "
                f"(expected {JSON_VERSION}); re-run calibration"
            )
        fields = ("expert_ids", "aux_ids", "aux_domains", "aux_embeddings", "correctness")
        missing = [name for name in fields if name not in payload]
        if missing:
            raise FedGRPOError(f"confidence graph JSON lacks {', '.join(missing)}")
        return build_confidence_graph(*(payload[name] for name in fields))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``to_json()`` to path atomically (a temporary file, then a rename)."""
        write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ConfidenceGraph:
        """Read a graph written by ``save``."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise FedGRPOError(f"no confidence graph at {path}; calibrate first") from exc
        return cls.from_json(text)


def build_confidence_graph(
    expert_ids: Sequence[str],
    aux_ids: Sequence[str],
    aux_domains: Sequence[str],
    aux_embeddings: ArrayLike,
    correctness: ArrayLike,
) -> ConfidenceGraph:
    """A ConfidenceGraph from plain sequences and arrays; embeddings are l2-normalised."""
    return ConfidenceGraph(
        expert_ids=tuple(expert_ids),
        aux_ids=tuple(aux_ids),
        aux_domains=tuple(aux_domains),
        aux_embeddings=np.asarray(aux_embeddings, dtype=np.float64),
        correctness=np.asarray(correctness, dtype=np.float64),
    )


def _check_ids(name: str, ids: tuple[str, ...]) -> None:
    """Ids are non-empty, unique strings (they key JSON, logs and messages)."""
    if not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError(f"{name} must be a non-empty sequence of strings")
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"{name} must be unique; duplicates: {duplicates}")


def _unit_rows(x: NDArray[np.float64], name: str) -> NDArray[np.float64]:
    """Rows scaled to unit l2 norm; rows already unit to 1e-12 are kept exactly."""
    if not np.isfinite(x).all():
        raise ConfigError(f"{name} must be finite")
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (rows, 1)
    if (norms == 0).any():
        raise ConfigError(f"{name} has an all-zero row, which has no direction (cosine)")
    return np.where(np.abs(norms - 1.0) <= _UNIT_TOLERANCE, x, x / norms)  # (rows, d)
