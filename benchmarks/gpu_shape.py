"""The paper's shape on a GPU: a few FedGRPO steps with experts on a random Qwen2.5-Math-1.5B.

No weights can be downloaded here, so this checks the machinery at the paper's scale, not learning:
a randomly initialised model of Qwen2.5-Math-1.5B's configuration (its config.json: hidden 1536, 28
layers, 12 attention heads, 2 KV heads, intermediate 8960, vocabulary 151,936, tied embeddings, RoPE
theta 10,000, 4,096 positions), saved in bf16, is the server and every client's expert (four
clients, one per built-in domain, each holding its own copy on the GPU as the embedded engine
does), and `fedgrpo.engines.run.run` trains it with FedGRPO's own path: prepare, calibration on
the auxiliary set, routing, expert scoring, GRPO through TRL with LoRA (rank 16 on every linear
layer), bf16 and activation (gradient) checkpointing, then evaluation. The paper's group and
lengths: M = 2 experts x G = 4 candidates per question, completions of up to 2,048 tokens, prompts
of about 512 (the official recipe's max_prompt_length: a system prompt padded to it). Two
questions per optimizer step (16 completions: the official 1.5B script's per-device batch), 4
steps per generation batch (FedGRPO's default), 8 steps; the official code's GRPO settings (lr
3e-6, temperature 0.7, beta 0.01, bnpo loss, no std scaling). A random policy almost never samples
its end token, so every candidate runs to the full 2,048 tokens: the upper end of a step's cost.
The experts' own answers and the evaluation are cut to 128 tokens: what is measured is the
policy's step, and a 2,048-token answer per auxiliary item and expert would cost minutes more.

Tokenizer: Qwen2's own class (``Qwen2Tokenizer``: byte-level BPE, Qwen's pre-tokenizer) over a
vocabulary of exactly the model's 151,936 ids: the 256 byte symbols, Qwen's ``<|endoftext|>``,
``<|im_start|>`` and ``<|im_end|>``, then inert filler words (" a", " b", ... " aa", ...), with no
merges and a ChatML template. Why this and not the tiny character tokenizer: transformers (5.25)
loads the tokenizer of any qwen2 model directory as ``Qwen2Tokenizer`` whatever its tokenizer.json
says, and re-read that way the character tokenizer silently drops every space and newline; a
byte-level vocabulary is what that class rebuilds exactly. Why not resize the model to a small
vocabulary: the vocabulary is the paper's shape too (the tied embedding is 233 M of the 1.54 B
parameters, and the logits of 16 x 2,048 completion tokens over 151,936 ids are the step's largest
activation), and a random policy samples every id, so every id must decode. Without merges,
encoding is one token per byte (a filler word is only ever produced by decoding), so prompt
lengths are counted in bytes.

Recorded (`benchmarks/results/gpu_shape-<time>.json`, through `common.write_result`): seconds per
optimizer step (the first generation batch includes warm-up), seconds and peak GPU memory
(`torch.cuda.max_memory_allocated`, and reserved) of every phase, the measured prompt lengths,
TRL's logged completion lengths, the model's size, bytes, the machine.

Without CUDA it prints one line and exits 0. ``--cpu-smoke`` runs the same code on a tiny
configuration (2 layers, hidden 64, a 512-id vocabulary, prompts of about 160 tokens, completions
of 16, 4 steps) on the CPU in well under a minute, to show the script works where no GPU is.

Run: .venv/bin/python benchmarks/gpu_shape.py [--steps 8] [--prompts-per-step 2] [--work DIR]
     .venv/bin/python benchmarks/gpu_shape.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from common import write_result

# Qwen2.5-Math-1.5B's config.json (max_position_embeddings 4096 and rope_theta 10000 are the Math
# model's; the general Qwen2.5-1.5B has 32768 and 1e6). Attention biases on q, k, v are Qwen2's own.
QWEN25_MATH_15B = {
    "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
    "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 4096,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}
TINY = {**QWEN25_MATH_15B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}


@dataclass(frozen=True)
class Shape:
    """What one run builds and trains."""

    model: dict[str, Any]  # the Qwen2Config's sizes
    prompt_tokens: int  # the mean prompt length aimed at (system prompt padded)
    completion_tokens: int  # the policy's max_completion_length
    answer_tokens: int  # the experts' own answers and the evaluation (max_new_tokens)
    prompts_per_step: int
    steps: int
    lora_rank: int


PAPER = Shape(QWEN25_MATH_15B, prompt_tokens=512, completion_tokens=2048, answer_tokens=128,
              prompts_per_step=2, steps=8, lora_rank=16)
CPU_SMOKE = Shape(TINY, prompt_tokens=160, completion_tokens=16, answer_tokens=8,
                  prompts_per_step=2, steps=4, lora_rank=4)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # Qwen's: padding, ChatML markers
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PADDING = "Check every intermediate result before you go on, and state the final answer once. "


def filler_word(i: int) -> str:
    """The i-th inert filler token, in byte-level spelling: "Ġ" (a space) and a bijective base-26
    word, so it decodes to " a", ..., " z", " aa", ...

    >>> [filler_word(i) for i in (0, 25, 26, 701, 702)]
    ['Ġa', 'Ġz', 'Ġaa', 'Ġzz', 'Ġaaa']
    """
    word, i = "", i + 1
    while i:
        i, r = divmod(i - 1, 26)
        word = chr(ord("a") + r) + word
    return "Ġ" + word


def build_tokenizer(vocab_size: int, max_length: int) -> Any:
    """A ``Qwen2Tokenizer`` of exactly `vocab_size` ids: the byte symbols, Qwen's special tokens,
    filler words; no merges (module docstring)."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}  # the 256 bytes
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    i = 0
    while len(vocab) < vocab_size:
        vocab[filler_word(i)] = len(vocab)
        i += 1
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens=["<|im_start|>"], model_max_length=max_length,
                               chat_template=CHAT_TEMPLATE)
    if len(tokenizer) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} ids, the model {vocab_size}")
    return tokenizer


def model_config(sizes: dict[str, Any], tokenizer: Any) -> Any:
    """The ``Qwen2Config`` of `sizes`, its special tokens the tokenizer's."""
    from transformers import Qwen2Config

    sizes = dict(sizes)
    theta = sizes.pop("rope_theta")
    return Qwen2Config(**sizes, rope_parameters={"rope_type": "default", "rope_theta": theta},
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def build_model(shape: Shape, out: Path, device: str) -> int:
    """A random Qwen2 model of `shape` and its tokenizer, saved to `out` in bf16; its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(shape.model["vocab_size"], shape.model["max_position_embeddings"])
    config = model_config(shape.model, tokenizer)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it will run: 1.5 B parameters in seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    count = sum(p.numel() for p in model.parameters())
    del model
    return count


def run_overrides(shape: Shape, model_dir: Path, work: Path, system_prompt: str) -> dict[str, Any]:
    """The config: the paper's group and lengths, LoRA, bf16, checkpointing; small data splits."""
    return {
        "server_model": str(model_dir), "expert_model": str(model_dir), "expert_steps": 0,
        "pool_size": 64, "aux_size": 40, "eval_size": 2, "val_size": 0, "client_size": 16, "public_size": 0,
        "prompt_style": "chat", "answer_format": "boxed", "system_prompt": system_prompt,
        "experts_per_question": 2, "generations_per_expert": 4, "competence_threshold": 0.0,
        "prompts_per_step": shape.prompts_per_step, "train_steps": shape.steps, "steps_per_generation": 4,
        "save_steps": shape.steps,  # one checkpoint at the end: its trainer_state.json holds TRL's log
        "learning_rate": 3e-6, "temperature": 0.7, "beta": 0.01, "loss_type": "bnpo", "scale_rewards": "none",
        "max_completion_length": shape.completion_tokens, "max_new_tokens": shape.answer_tokens,
        "eval_samples": 0, "eval_batch_size": 64,
        "lora_rank": shape.lora_rank, "lora_alpha": 2 * shape.lora_rank,
        "grpo_args": ("bf16=true", "activation_checkpointing=true"),
        "cache_dir": str(work / "cache"),
    }


def padded_system_prompt(shape: Shape, model_dir: Path, work: Path) -> tuple[str, list[int]]:
    """The boxed format's system prompt, padded so that the training pool's prompts average
    `shape.prompt_tokens`; returns it and every pool prompt's length in tokens."""
    from transformers import AutoTokenizer

    from fedgrpo import load_config
    from fedgrpo.data.partition import build_splits
    from fedgrpo.data.prompts import SYSTEM_PROMPTS, PromptStyle

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    pool = build_splits(load_config(overrides=run_overrides(shape, model_dir, work, "")).data).pool

    def lengths(system: str) -> list[int]:
        style = PromptStyle("chat", "boxed", system)
        return [len(tokenizer.apply_chat_template(style.prompt(q.question), add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"]) for q in pool]

    base = SYSTEM_PROMPTS["boxed"]
    short = lengths(base)
    missing = max(0, shape.prompt_tokens - round(sum(short) / len(short)))  # one token per byte
    system = base + " " + (PADDING * (missing // len(PADDING) + 1))[: max(0, missing - 1)]  # ASCII: a byte each
    return system, lengths(system)


class MemoryProgress:
    """A progress sink that prints every phase with its seconds and peak GPU memory (reset at its start)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.phases: list[dict[str, Any]] = []

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        yield lambda n=1: None
        entry = {"phase": description, "seconds": round(time.perf_counter() - started, 2)}
        if self.cuda:
            entry["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            entry["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        self.phases.append(entry)
        print(f"  {description}: {entry['seconds']:.1f} s"
              + (f", peak {entry['peak_allocated_gib']:.1f} GiB allocated" if self.cuda else ""), flush=True)

    def log(self, message: str) -> None:
        print(f"  {message}", flush=True)


def trl_log(out: Path, steps: int) -> list[dict[str, Any]]:
    """TRL's logged completion lengths per step, from the final checkpoint's trainer state."""
    state = out / "checkpoints" / f"checkpoint-{steps}" / "trainer_state.json"
    if not state.is_file():
        return []
    keep = ("step", "completions/mean_length", "completions/max_length", "completions/clipped_ratio", "num_tokens")
    return [{k: h[k] for k in keep if k in h} for h in json.loads(state.read_text())["log_history"]
            if "completions/mean_length" in h]


def measure(shape: Shape, work: Path, device: str) -> dict[str, Any]:
    """Build the model, run FedGRPO on it, return what was measured."""
    import torch

    from fedgrpo import load_config
    from fedgrpo.engines.run import run

    cuda = device == "cuda"
    model_dir = work / "model"
    started = time.perf_counter()
    parameters = build_model(shape, model_dir, device)
    build_s = time.perf_counter() - started
    system, prompt_lengths = padded_system_prompt(shape, model_dir, work)
    config = load_config(overrides=run_overrides(shape, model_dir, work, system))
    progress = MemoryProgress(cuda)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    (work / "run").mkdir(parents=True, exist_ok=True)
    metrics = run(config, work / "run", progress)
    spg = config.train.steps_per_generation
    steps = metrics.step_seconds
    later = steps[spg:]  # after the first generation batch, which includes TRL's warm-up
    peaks = [p.get("peak_allocated_gib", 0.0) for p in progress.phases]
    return {
        "mode": "gpu" if cuda else "cpu-smoke",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "note": "random weights: checks the machinery at the paper's scale, not learning",
        "model": {**shape.model, "parameters": parameters, "dtype": "bfloat16", "build_seconds": round(build_s, 1)},
        "shape": {**asdict(shape), "model": "above", "experts_per_question": 2, "generations_per_expert": 4,
                  "completions_per_step": shape.prompts_per_step * 8, "steps_per_generation": spg,
                  "clients": len(config.data.domains), "bf16": True, "activation_checkpointing": True,
                  "prompt_tokens_measured": {"min": min(prompt_lengths), "mean": round(sum(prompt_lengths) / len(prompt_lengths), 1),
                                             "max": max(prompt_lengths)}},
        "step_seconds": steps,
        "mean_step_seconds": round(sum(steps) / len(steps), 3) if steps else None,
        "mean_step_seconds_after_first_generation": round(sum(later) / len(later), 3) if later else None,
        "generation_batch_seconds": [round(sum(steps[i:i + spg]), 2) for i in range(0, len(steps), spg)],
        "peak_allocated_gib": max(peaks, default=0.0) if cuda else None,
        "phases": progress.phases,
        "trl_log": trl_log(work / "run", shape.steps),
        "timings_s": metrics.timings_s,
        "wall_time_s": metrics.wall_time_s,
        "bytes": metrics.bytes["totals"],
        "diagnostics": metrics.diagnostics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same path on a tiny configuration, on CPU")
    parser.add_argument("--steps", type=int, help="GRPO steps (default: 8; smoke: 4)")
    parser.add_argument("--prompts-per-step", type=int, help="questions per step, 8 completions each (default 2)")
    parser.add_argument("--work", help="keep the model and the run here (default: a temporary directory)")
    parser.add_argument("--results", help="where the result JSON goes (default: benchmarks/results)")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_shape: needs a CUDA GPU and found none; skipped (--cpu-smoke runs the same path on a tiny model)")
        return 0
    shape = CPU_SMOKE if args.cpu_smoke else PAPER
    shape = replace(shape, steps=args.steps or shape.steps,
                    prompts_per_step=args.prompts_per_step or shape.prompts_per_step)
    from fedgrpo.engines.environment import prepare_process

    prepare_process()
    with tempfile.TemporaryDirectory(prefix="gpu-shape-") as scratch:
        work = Path(args.work).expanduser() if args.work else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = measure(shape, work, "cpu" if args.cpu_smoke else "cuda")
    name = "gpu_shape" + ("-cpu-smoke" if args.cpu_smoke else "")
    path = write_result(name, result, Path(args.results)) if args.results else write_result(name, result)
    print(f"{result['mode']} on {result['device']}: {result['model']['parameters']:,} parameters; "
          f"{len(result['step_seconds'])} steps, mean {result['mean_step_seconds']} s per step "
          f"({result['mean_step_seconds_after_first_generation']} after the first generation batch); generation batches {result['generation_batch_seconds']} s; "
          f"peak {result['peak_allocated_gib']} GiB allocated; wall {result['wall_time_s']} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
