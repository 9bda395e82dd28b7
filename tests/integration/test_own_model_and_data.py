"""Your own model and data, end to end on this CPU: a small Llama-style model with a real subword
(byte-level BPE) tokenizer and a chat template, built and saved here; a small math dataset in
several subjects, with worked solutions and answers to grade by math-verify, written here as files
in every format; `fedgrpo run` in chat style with a LoRA policy, with and without ground truth, on
the embedded engine and on Flower's Simulation runtime.

Run: pytest tests/integration/test_own_model_and_data.py
"""

from __future__ import annotations

import csv
import json
import random
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from fedgrpo.config import load_config
from fedgrpo.data.prompts import PromptStyle
from fedgrpo.engines.experts import make_local_expert
from fedgrpo.engines.run import Connector, run
from fedgrpo.transport.embedded import EmbeddedTransport
from fedgrpo.types import Reads

pytestmark = pytest.mark.slow

SUBJECTS = {
    "Algebra": lambda a, b: (f"Solve for $x$: $x + {a} = {a + b}$.", f"Subtract {a} from both sides: $x = {b}$.", b),
    "Prealgebra": lambda a, b: (f"What is ${a} + {b}$?", f"Adding, ${a} + {b} = {a + b}$.", a + b),
    "Number Theory": lambda a, b: (f"What is the remainder of ${a + 10}$ divided by $3$?",
                                   f"${a + 10} = 3 \\cdot {(a + 10) // 3} + {(a + 10) % 3}$.", (a + 10) % 3),
}


def _rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subject = list(SUBJECTS)[i % len(SUBJECTS)]
        question, solution, answer = SUBJECTS[subject](rng.randint(1, 40), rng.randint(1, 40))
        rows.append({"problem": question, "solution": solution, "answer": str(answer), "subject": subject})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The files and the model directory a user would bring."""
    root = tmp_path_factory.mktemp("own")
    pool = [{k: v for k, v in r.items() if k in ("problem", "subject")} for r in _rows(1, 24)]  # no answers
    files = {"pool": _write_jsonl(root / "pool.jsonl", pool)}
    with (root / "aux.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["problem", "solution", "answer", "subject"])
        writer.writeheader()
        writer.writerows(_rows(2, 12))
    files["aux"] = str(root / "aux.csv")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_rows(3, 9)), root / "math_eval.parquet")
    files["eval"] = str(root / "math_eval.parquet")
    files["eval2"] = _write_jsonl(root / "minerva.jsonl", _rows(4, 6))
    from datasets import Dataset

    files["clients"] = []
    for k in range(3):  # one subject per site, as the paper's experts
        subject = list(SUBJECTS)[k]
        Dataset.from_list([r for r in _rows(10 + k, 30) if r["subject"] == subject]).save_to_disk(str(root / f"site{k}"))
        files["clients"].append(str(root / f"site{k}"))
    model_dir = root / "chat-llama"
    _build_chat_model(model_dir, _rows(5, 120))
    return files, model_dir


def _build_chat_model(out: Path, rows: list[dict]) -> None:
    """A byte-level BPE tokenizer with a ChatML template and a small Llama, taught the chat layout
    (reasoning in <think>, the answer in <answer>) by a little supervised training."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from fedgrpo.data.prompts import PromptStyle
    from fedgrpo.data.tasks import Question
    from fedgrpo.models.load import supervised_pairs
    from fedgrpo.models.pretrain import train_supervised

    style = PromptStyle("chat", "tags", None)
    questions = [Question(f"q{i}", r["subject"], "math", r["problem"], r["answer"], {"solution": r["solution"]})
                 for i, r in enumerate(rows)]
    corpus = [style.target(q.answer, q.metadata["solution"]) + q.question for q in questions]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus * 3, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        padding_side="left", chat_template=template)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    train_supervised(model, tokenizer, supervised_pairs(questions, style), steps=150, batch_size=16,
                     learning_rate=3e-3, seed=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _overrides(files: dict, model_dir: Path, cache_dir: Path, **extra) -> dict:
    return {
        "pool_file": files["pool"], "aux_file": files["aux"],
        "eval_files": (f"MATH={files['eval']}", files["eval2"]), "client_files": tuple(files["clients"]),
        "question_column": "problem", "domain_column": "subject",
        "server_model": str(model_dir), "expert_model": str(model_dir), "expert_steps": 10, "sft_batch_size": 8,
        "prompt_style": "chat", "answer_format": "tags", "lora_rank": 4, "lora_alpha": 8,
        "train_steps": 2, "prompts_per_step": 2, "steps_per_generation": 1, "save_steps": 1,
        "max_completion_length": 40, "max_new_tokens": 40, "neighbours": 4, "learning_rate": 1e-3,
        "cache_dir": str(cache_dir), **extra}


class Recording:
    """Wraps an expert: keeps every request it was sent and every reply it gave."""

    def __init__(self, inner, seen):
        self.inner, self.seen = inner, seen

    def hello(self):
        return self.inner.hello()

    def calibrate(self, request):
        return self.inner.calibrate(request)

    def score(self, request):
        reply = self.inner.score(request)
        with self.seen["lock"]:
            self.seen["requests"].append(request)
            self.seen["replies"].append(reply)
        return reply


@pytest.fixture(scope="module")
def embedded_run(own, cache_dir, tmp_path_factory):
    files, model_dir = own
    config = load_config(overrides=_overrides(files, model_dir, cache_dir))
    seen = {"lock": threading.Lock(), "requests": [], "replies": []}

    def recording(prepared, out):
        return EmbeddedTransport({
            s.expert_id: Recording(make_local_expert(prepared.config, s.expert_id, s.questions,
                                                     prepared.expert_dirs[s.expert_id]), seen)
            for s in prepared.splits.clients}, style=PromptStyle.from_config(prepared.config.prompts))

    out = tmp_path_factory.mktemp("own-run")
    return config, out, run(config, out, connector=Connector(recording)).to_dict(), seen


def test_each_evaluation_set_is_reported_apart(embedded_run):
    _, _, metrics, _ = embedded_run
    assert list(metrics["accuracy_before"]) == list(metrics["accuracy_after"]) == ["MATH", "minerva"]
    assert metrics["accuracy_after"]["MATH"]["n"] == 9 and metrics["accuracy_after"]["minerva"]["n"] == 6


def test_answer_matching_experts_receive_final_answers_only_and_send_back_floats_only(embedded_run):
    _, _, metrics, seen = embedded_run
    candidates = [c for r in seen["requests"] for item in r.items for c in item.candidates]
    assert candidates, "no expert was asked to score"
    # An expert that matches answers declares so in its hello and is sent each distinct final answer
    # of a group once, not the policy's whole completions.
    assert all(r.reads is Reads.ANSWERS for r in seen["requests"])
    assert all(len(set(item.candidates)) == len(item.candidates) for r in seen["requests"] for item in r.items)
    assert metrics["bytes"]["scoring_shape"]["answers"]["values"] == len(candidates)
    assert all(isinstance(r, float) for reply in seen["replies"] for r in reply.rewards)
    assert sum(len(reply.rewards) for reply in seen["replies"]) == len(candidates)
    assert metrics["failures"] == {}


def test_the_lora_policy_is_saved_as_an_adapter_and_merged(embedded_run):
    _, out, metrics, _ = embedded_run
    from fedgrpo.models.load import load_model

    assert (out / "final-adapter" / "adapter_config.json").is_file()
    model, tokenizer = load_model(metrics["final_model"])  # a plain model directory again
    assert not hasattr(model, "peft_config") and tokenizer.chat_template


def test_ground_truth_mode_runs_from_the_command_line(own, cache_dir, tmp_path):
    from fedgrpo.cli import main

    files, model_dir = own
    answered = _write_jsonl(tmp_path / "pool-answered.jsonl", _rows(1, 24))  # ground truth needs answers
    argv = ["run", "--use-ground-truth", "--output-dir", str(tmp_path / "gt")]
    for key, value in _overrides({**files, "pool": answered}, model_dir, cache_dir).items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "gt" / "metrics.json").read_text())
    assert metrics["mode"] == "ground_truth" and list(metrics["accuracy_after"]) == ["MATH", "minerva"]


def test_ground_truth_refuses_a_pool_without_answers(own, cache_dir, tmp_path, capsys):
    from fedgrpo.cli import main

    files, model_dir = own
    argv = ["run", "--use-ground-truth", "--output-dir", str(tmp_path / "gt")]
    for key, value in _overrides(files, model_dir, cache_dir).items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "training pool file pool.jsonl, line 1: no 'answer'" in err


def test_prepare_reports_every_model_on_each_evaluation_set(own, cache_dir, tmp_path):
    from fedgrpo.cli import main

    files, model_dir = own
    argv = ["prepare", "--output-dir", str(tmp_path / "prep")]
    for key, value in _overrides(files, model_dir, cache_dir, eval_samples=2).items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "prep" / "prepare.json").read_text())["report"]
    assert list(report["server"]) == ["MATH", "minerva"]
    assert set(report["experts"]) == {"client-0", "client-1", "client-2"}
    assert report["expert_domains"] == {"client-0": "Algebra", "client-1": "Prealgebra", "client-2": "Number Theory"}


def test_a_broken_file_is_a_one_line_error(own, cache_dir, tmp_path, capsys):
    from fedgrpo.cli import main

    files, model_dir = own
    broken = tmp_path / "aux.jsonl"
    broken.write_text('{"problem": "What is 1 + 1?", "answer": "2"}\n{"problem": oops}\n')
    argv = ["run", "--output-dir", str(tmp_path / "bad")]
    for key, value in _overrides({**files, "aux": str(broken)}, model_dir, cache_dir).items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "aux.jsonl line 2 is not a JSON object" in err


@pytest.mark.flower
def test_flower_simulation_gives_the_embedded_numbers(own, cache_dir, embedded_run, tmp_path):
    from fedgrpo.engines.switch import run_engine

    config, _, embedded, _ = embedded_run
    simulated = run_engine(replace(config, engine=replace(config.engine, engine="simulation")), tmp_path)
    assert simulated["reward_curve"] == embedded["reward_curve"]
    assert simulated["accuracy_after"] == embedded["accuracy_after"]
    # The same payload bytes and messages; wire bytes are each engine's own serialization.
    payload = ("totals", "per_expert", "per_step", "stale_replies", "refused_replies", "scoring_shape")
    assert json.loads(json.dumps({k: simulated["bytes"][k] for k in payload})) == json.loads(
        json.dumps({k: embedded["bytes"][k] for k in payload}))
