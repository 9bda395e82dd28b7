"""Closed forms of each method's communication at the paper's scale (bytes over a whole run).

Notation (docs/bench.md has the derivation): R rounds, n clients per round, b = 4 bytes per fp32
value, s bytes per text sample; FedGRPO: Q training questions, M experts per question, G candidates
per expert, c bytes per candidate, q bytes per question, K clients, |D_p| auxiliary items.

- FedPETuning: 2 R n |theta_LoRA| b, with |theta_LoRA| = layers x sum over adapted matrices of
  r (d_in + d_out) (all linear projections of a Qwen2.5 block: q, k, v, o, gate, up, down).
- FedGRPO: down Q M (q + G c) + K |D_p| (q + answer), up Q M G b + K |D_p| b.
- DPSDA-FL: per client T rounds of N candidates down (N s) and N counts up (N b), then its synthetic
  set up (S s).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def lora_parameters(model: Transformer, rank: int) -> int:
    """LoRA parameters on every linear projection of every block: r (d_in + d_out) per matrix."""
    h, i, kv = model.hidden, model.intermediate, model.kv_dim
    per_layer = rank * ((h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h))
    return model.layers * per_layer


def fedpetuning_bytes(model: Transformer, rank: int, rounds: int, clients_per_round: int) -> int:
    return 2 * rounds * clients_per_round * lora_parameters(model, rank) * FP32


def fedgrpo_bytes(questions: int, experts: int, candidates: int, question_bytes: int, candidate_bytes: int,
                  clients: int, aux_items: int, answer_bytes: int) -> dict[str, int]:
    down = questions * experts * (question_bytes + candidates * candidate_bytes) \
        + clients * aux_items * (question_bytes + answer_bytes)
    up = questions * experts * candidates * FP32 + clients * aux_items * FP32
    return {"down": down, "up": up, "total": down + up, "rewards_up_only": questions * experts * candidates * FP32}


def dpsda_bytes(clients: int, rounds: int, candidates: int, synthetic: int, sample_bytes: int) -> dict[str, int]:
    down = clients * rounds * candidates * sample_bytes
    up = clients * (rounds * candidates * FP32 + synthetic * sample_bytes)
    return {"down": down, "up": up, "total": down + up, "synthetic_up_only": clients * synthetic * sample_bytes}


def paper_scale_table(rank: int = 8, rounds: int = 100, clients_per_round: int = 10, questions: int = 2000,
                      experts: int = 2, candidates: int = 4, clients: int = 10, aux_items: int = 100,
                      question_bytes: int = 400, candidate_bytes: int = 2000, answer_bytes: int = 20,
                      pe_rounds: int = 11, pe_candidates: int = 2000, synthetic: int = 200,
                      sample_bytes: int = 1000) -> dict[str, dict[str, int]]:
    """Bytes per method and server model at the paper's scale, under the stated assumptions."""
    fedgrpo = fedgrpo_bytes(questions, experts, candidates, question_bytes, candidate_bytes, clients, aux_items,
                            answer_bytes)
    dpsda = dpsda_bytes(clients, pe_rounds, pe_candidates, synthetic, sample_bytes)
    return {m.name: {"fedpetuning": fedpetuning_bytes(m, rank, rounds, clients_per_round),
                     "dpsda": dpsda["total"], "fedgrpo": fedgrpo["total"],
                     "fedgrpo_rewards_up_only": fedgrpo["rewards_up_only"]} for m in QWEN25}
