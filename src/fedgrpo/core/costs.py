"""Closed forms of each method's communication at the paper's scale (bytes over a whole run).

Notation (docs/bench.md has the derivation): R rounds, n clients per round, b = 4 bytes per fp32
value, s bytes per text sample; FedGRPO: Q training questions, M experts per question, G candidates
per expert, K clients, |D_p| auxiliary items, q bytes per question, and its measured `Schedule`:
v scoring visits per question over a run, d distinct final answers per item (one expert's block of
G candidates of one question), a bytes per answer, c bytes per candidate text, P items per message.

- FedPETuning: 2 R n |theta_LoRA| b, with |theta_LoRA| = layers x sum over adapted matrices of
  r (d_in + d_out) (all linear projections of a Qwen2.5 block: q, k, v, o, gate, up, down).
- FedGRPO, in the message shapes of `transport.session` (payload model, `core.comm`): Q v M items in
  Q v M / P messages. Down: per message its header (step, session name, form), per item its number
  in the session (8 B) and d answers of a bytes (answer matching) or G candidates of c bytes (a
  scorer that reads the reasoning), per (question, expert) its id, verifier and text once; the
  auxiliary set to each client once. Up: per message its header (step, form) and one bit per value
  (8 for real-valued rewards), a bit per auxiliary item per client.
- DPSDA-FL: per client T rounds of N candidates down (N s) and N counts up (N b), then its synthetic
  set up (S s).

FedGRPO is a range, not a point (`fedgrpo_range`): for answer-matching scorers from every candidate
of an item agreeing (d = 1) to all differing (d = G), and the measured d between; for a scorer that
reads the reasoning, from the measured candidate texts to the paper's 2,048-token budget, sent
uncompressed, as the upper end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Transformer:
    name: str
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key/value heads x head dim


# Qwen2.5 configs (their config.json: num_hidden_layers, hidden_size, intermediate_size,
# num_key_value_heads x head_dim).
QWEN25 = (
    Transformer("Qwen2.5-Math-1.5B", 28, 1536, 8960, 2 * 128),
    Transformer("Qwen2.5-3B", 36, 2048, 11008, 2 * 128),
    Transformer("Qwen2.5-Math-7B", 28, 3584, 18944, 4 * 128),
)
FP32 = 4
INT = 8  # an integer in the payload model (a step, a question's number)
SESSION_NAME = 16  # characters of the server's session name
REQUEST_HEADER = INT + SESSION_NAME + len("answers")  # step, session, form
REPLY_HEADER = INT + len("bits")  # step, form
PAPER_TOKENS = 2048  # the paper's completion budget
BYTES_PER_TOKEN = 4.0  # UTF-8 bytes per token of English and LaTeX reasoning (Qwen2.5's tokenizer: ~3.5-4.5)


@dataclass(frozen=True)
class Schedule:
    """What FedGRPO's scoring messages hold over a run; fill it from a run (`schedule_from_shape`).

    Defaults: `visits` 4.8 and `distinct_answers` 2.9 were measured on the default laptop run (issue
    22: each training question scored 4.8 times over 600 steps; 2.9 distinct final answers per group
    of 8 candidates, so at most that for a block of G = 4); `answer_bytes` 20 (a MATH final answer,
    e.g. ``\\frac{3}{4}``; the laptop's are 3); `candidate_bytes` 2,000 (about 500 tokens: the low
    end of a reasoning candidate); `text_compression` 1.0 (sent as is; zlib made the laptop's short
    candidates 9-10% of their size, `benchmarks/compression.py`, not measured on reasoning traces);
    `items_per_message` 16 (the laptop's: one expert's questions of one generation batch);
    `id_bytes` 39 (a question id and a verifier name, sent with the text)."""

    visits: float = 4.8
    distinct_answers: float = 2.9
    answer_bytes: float = 20.0
    candidate_bytes: float = 2000.0
    text_compression: float = 1.0
    items_per_message: float = 16.0
    id_bytes: float = 39.0


def schedule_from_shape(shape: dict[str, Any], base: Schedule = Schedule()) -> Schedule:
    """`base` with what a run measured (`transport.session.ScoringSession.shape`, in a run's
    ``metrics.json`` under ``bytes.scoring_shape``): visits per question, distinct answers per item
    and their bytes (answer form), candidate bytes, items per message. Forms the run did not send
    keep `base`'s values."""
    out = base
    for counts in shape.values():
        if counts.get("questions") and counts.get("items") and counts.get("requests"):
            out = replace(out, visits=counts["visits"] / counts["questions"],
                          items_per_message=counts["items"] / counts["requests"])
        if counts.get("candidates"):
            out = replace(out, candidate_bytes=counts["candidate_bytes"] / counts["candidates"])
    answers = shape.get("answers") or {}
    if answers.get("items") and answers.get("values"):
        out = replace(out, distinct_answers=answers["values"] / answers["items"],
                      answer_bytes=answers["value_bytes"] / answers["values"])
    return out


def lora_parameters(model: Transformer, rank: int) -> int:
    """LoRA parameters on every linear projection of every block: r (d_in + d_out) per matrix."""
    h, i, kv = model.hidden, model.intermediate, model.kv_dim
    per_layer = rank * ((h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h))
    return model.layers * per_layer


def fedpetuning_bytes(model: Transformer, rank: int, rounds: int, clients_per_round: int) -> int:
    return 2 * rounds * clients_per_round * lora_parameters(model, rank) * FP32


def fedgrpo_bytes(schedule: Schedule, *, questions: int, experts: int, candidates: int, clients: int,
                  aux_items: int, question_bytes: float, aux_answer_bytes: float = 20.0, reads: str = "answers",
                  reward_bits: int = 1) -> dict[str, float]:
    """FedGRPO's bytes over a run (module docstring): `reads` ``answers`` (d distinct answers of a
    bytes per item) or ``texts`` (G candidates of c bytes, times the compression ratio); rewards up
    at `reward_bits` each (1: 0/1 rewards as bits; 8: real-valued, 8-bit levels)."""
    s = schedule
    items = questions * s.visits * experts
    messages = items / s.items_per_message
    if reads == "answers":
        values, value_bytes = min(s.distinct_answers, candidates), s.answer_bytes
    else:
        values, value_bytes = candidates, s.candidate_bytes * s.text_compression
    texts = questions * experts * (question_bytes + s.id_bytes)  # each question's text once per expert
    aux = clients * aux_items * (question_bytes + s.id_bytes + aux_answer_bytes)
    down = messages * REQUEST_HEADER + items * (INT + values * value_bytes) + texts + aux
    rewards_up = messages * math.ceil(s.items_per_message * values * reward_bits / 8)
    up = messages * REPLY_HEADER + rewards_up + clients * (len("bits") + math.ceil(aux_items / 8))
    return {"down": down, "up": up, "total": down + up, "rewards_up_only": rewards_up}


def fedgrpo_range(schedule: Schedule, **shape: Any) -> dict[str, dict[str, float]]:
    """FedGRPO's total bytes as a range (module docstring): for answer-matching scorers from d = 1 to
    d = G, with the schedule's d as `measured`; for a scorer that reads the reasoning from the
    schedule's candidate texts (compressed as measured) to PAPER_TOKENS tokens each, uncompressed.
    `shape`: `fedgrpo_bytes`'s keyword arguments."""
    g = shape["candidates"]

    def total(s: Schedule, **kw: Any) -> float:
        return fedgrpo_bytes(s, **shape, **kw)["total"]

    return {"answers": {"low": total(replace(schedule, distinct_answers=1.0)), "measured": total(schedule),
                        "high": total(replace(schedule, distinct_answers=float(g)))},
            "texts": {"low": total(schedule, reads="texts"),
                      "high": total(replace(schedule, candidate_bytes=PAPER_TOKENS * BYTES_PER_TOKEN,
                                            text_compression=1.0), reads="texts")}}


def dpsda_bytes(clients: int, rounds: int, candidates: int, synthetic: int, sample_bytes: int) -> dict[str, int]:
    down = clients * rounds * candidates * sample_bytes
    up = clients * (rounds * candidates * FP32 + synthetic * sample_bytes)
    return {"down": down, "up": up, "total": down + up, "synthetic_up_only": clients * synthetic * sample_bytes}


def paper_scale_table(rank: int = 8, rounds: int = 100, clients_per_round: int = 10, questions: int = 2000,
                      experts: int = 2, candidates: int = 4, clients: int = 10, aux_items: int = 100,
                      question_bytes: int = 400, pe_rounds: int = 11, pe_candidates: int = 2000,
                      synthetic: int = 200, sample_bytes: int = 1000,
                      schedule: Schedule = Schedule()) -> dict[str, dict[str, Any]]:
    """Bytes per method and server model at the paper's scale, under the stated assumptions and
    `schedule` (a run's, `schedule_from_shape`, or the documented defaults). ``fedgrpo`` is FedGRPO
    with answer-matching scorers at the schedule's distinct answers; ``fedgrpo_range`` its range and
    the full-text case (`fedgrpo_range`); ``fedgrpo_rewards_up_only`` the packed rewards."""
    shape = {"questions": questions, "experts": experts, "candidates": candidates, "clients": clients,
             "aux_items": aux_items, "question_bytes": question_bytes}
    fedgrpo = fedgrpo_bytes(schedule, **shape)
    ranges = fedgrpo_range(schedule, **shape)
    dpsda = dpsda_bytes(clients, pe_rounds, pe_candidates, synthetic, sample_bytes)
    return {m.name: {"fedpetuning": fedpetuning_bytes(m, rank, rounds, clients_per_round),
                     "dpsda": dpsda["total"], "fedgrpo": round(fedgrpo["total"]),
                     "fedgrpo_range": {form: {k: round(v) for k, v in r.items()} for form, r in ranges.items()},
                     "fedgrpo_rewards_up_only": round(fedgrpo["rewards_up_only"]),
                     "schedule": schedule.__dict__} for m in QWEN25}
