"""`benchmarks/gpu_shape.py`: the paper's shape on a GPU (issue 20, item 8).

Fast here: it skips in one line without CUDA; its tokenizer covers Qwen2.5's 151,936 ids and
reads back the same; its model is Qwen2.5-Math-1.5B's size (counted on the meta device, nothing allocated). The run itself
needs a GPU (`gpu`, and `slow`: minutes); its CPU smoke (`--cpu-smoke`, about 25 s on 2 cores) is
run by hand, not here. Run: pytest tests/unit/test_gpu_shape.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_shape


def test_without_cuda_it_says_so_in_one_line_and_exits_0(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_shape.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "needs a CUDA GPU" in out and "--cpu-smoke" in out


def test_filler_words_are_distinct_and_never_a_single_character():
    words = [gpu_shape.filler_word(i) for i in range(30_000)]
    assert len(set(words)) == len(words) and min(map(len, words)) == 2


@pytest.fixture(scope="module")
def tokenizer():
    return gpu_shape.build_tokenizer(151_936, 4096)


def test_the_tokenizer_has_exactly_the_model_ids_and_decodes_every_one(tokenizer):
    assert len(tokenizer) == 151_936
    # A random policy samples any id: each decodes to text (fillers to short words, never nothing).
    for i in (0, 200, 50_000, 151_935):
        assert isinstance(tokenizer.decode([i]), str)
    assert tokenizer.decode([151_935]).startswith(" ")
    # Encoding stays one token per character, the chat markers one token each.
    messages = [{"role": "user", "content": "What is 12 x 3?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    rendered = "<|im_start|>user\nWhat is 12 x 3?<|im_end|>\n<|im_start|>assistant\n"
    assert len(ids) == len(rendered) - 2 * (len("<|im_start|>") - 1) - (len("<|im_end|>") - 1)
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"


def test_the_tokenizer_reads_back_the_same_beside_a_qwen2_model(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    # transformers loads any qwen2 directory's tokenizer as Qwen2Tokenizer, whatever tokenizer.json
    # says (a character tokenizer lost every space and newline that way): this one must survive it.
    gpu_shape.model_config(gpu_shape.TINY, tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "Solve: 12 × 3?\nThen add 4."
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(again(text)["input_ids"]) == len(text.encode()) and again.decode(again(text)["input_ids"]) == text


def test_the_paper_model_is_qwen25_math_15b_sized(tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    config = gpu_shape.model_config(gpu_shape.QWEN25_MATH_15B, tokenizer)
    with torch.device("meta"):  # shapes only
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    # Qwen2.5-1.5B's model card: 1.54B parameters, 1.31B without embeddings (tied, counted once).
    assert round(total / 1e9, 2) == 1.54 and round((total - embedding) / 1e9, 2) == 1.31
    assert config.rope_parameters["rope_theta"] == 10_000 and config.max_position_embeddings == 4096


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_one_generation_batch_at_the_paper_shape_on_the_gpu(tmp_path):
    assert gpu_shape.main(["--steps", "4", "--results", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("gpu_shape-*.json")).read_text())
    assert result["model"]["parameters"] > 1.5e9 and len(result["step_seconds"]) == 4
    # A random policy runs its candidates to the 2,048-token cap: the shape was really trained.
    assert result["trl_log"] and result["trl_log"][0]["completions/max_length"] == 2048
    # The policy's and four experts' bf16 weights alone are 5 x 3.1 GB.
    assert result["peak_allocated_gib"] > 14
