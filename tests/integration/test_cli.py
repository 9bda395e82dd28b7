"""The `fedgrpo` command as a user meets it: outputs on success, one-line errors on mistakes.

In-process calls of `fedgrpo.cli.main` for speed; one subprocess checks the real console script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.cli import EXIT_USER_ERROR, build_parser, main
from fedgrpo.config import field_index

from .conftest import TINY_OVERRIDES


def _flags(overrides: dict, cache_dir: Path) -> list[str]:
    argv = []
    for key, value in {**overrides, "cache_dir": str(cache_dir)}.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
    return argv


def test_every_config_field_has_a_flag():
    # Flags are generated from the dataclasses: a new field must appear without hand-editing the CLI.
    help_text = build_parser()._subparsers._group_actions[0].choices["prepare"].format_help()
    for name in field_index():
        assert "--" + name.replace("_", "-") in help_text


@pytest.mark.slow
def test_prepare_writes_config_and_results(tmp_path, cache_dir, prepared, capsys):
    out = tmp_path / "run"
    code = main(["prepare", *_flags(TINY_OVERRIDES, cache_dir), "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "prepare.json").read_text())
    assert set(results["report"]["server"]) == {"arithmetic", "spelling"}
    assert (out / "config.yaml").read_text().startswith("domains:")
    printed = capsys.readouterr().out
    assert "client-0 (arithmetic)" in printed and "GRPO signal" in printed


@pytest.mark.slow
def test_evaluate_prints_a_table_and_writes_json(tmp_path, cache_dir, prepared, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", *_flags(TINY_OVERRIDES, cache_dir), "--model",
                 str(prepared.expert_dirs["client-1"]), "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "evaluate.json").read_text())
    assert set(results["scores"]) == {"arithmetic", "spelling"}
    assert 0.0 <= results["mean_pass_at_1"] <= 1.0
    assert "pass@1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["prepare", "--domains", "astrology"], "unknown domain 'astrology'"),
        (["prepare", "--aux-size", "500", "--pool-size", "100"], "lower aux_size or raise pool_size"),
        (["prepare", "--server-model", "/no/such/model"], "is not an existing directory"),
        (["prepare", "--server-model", "Qwen/Qwen2.5-0.5B"], "nothing is downloaded"),
        (["prepare", "--pool-size", "many"], "pool_size must be an integer"),
        (["evaluate", "--model", "/no/such/dir"], "is not a directory"),
        (["bench", "--methods", "fedsgd"], "unknown method 'fedsgd'"),
        (["bench", "--ablation", "learning_rate=1,2"], "--ablation takes KEY=V1,V2"),
        (["bench", "--ablation", "experts_per_question=9"], "experts_per_question (9) is larger than"),
        (["bench", "--dpsda-epsilon", "0"], "dpsda_epsilon must be > 0"),
        (["run", "--expert-epsilon", "0"], "expert_epsilon must be > 0"),
        (["run", "--expert-epsilon", "-1"], "expert_epsilon must be > 0"),
        (["run", "--label-epsilon", "0"], "label_epsilon must be > 0"),
        (["run", "--expert-epsilon", "8", "--expert-delta", "0"], "expert_delta must be in (0, 1/n]"),
        (["run", "--expert-epsilon", "8", "--expert-delta", "0.01"], "set expert_delta to at most 0.001"),
        (["run", "--expert-epsilon", "8", "--expert-clip-norm", "0"], "expert_clip_norm must be > 0"),
        (["run", "--expert-epsilon", "1e-9"], "expert_epsilon is out of reach"),
        (["run", "--expert-epsilon", "8", "--expert-dp-batch-size", "5000"], "lower expert_dp_batch_size"),
        (["run", "--expert-epsilon", "8", "--expert-steps", "0"], "drop expert_epsilon"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(argv, fragment, capsys, tmp_path):
    code = main([*argv, "--output-dir", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR
    assert len(err.splitlines()) == 1 and fragment in err, err
    # Validation happens before any output directory is created.
    assert not (tmp_path / "never").exists()


def test_malformed_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: [arithmetic\n")
    assert main(["prepare", "--config", str(bad)]) == EXIT_USER_ERROR
    assert "malformed" in capsys.readouterr().err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["prepare", "--output-dir", str(blocker / "run")])
    assert code == EXIT_USER_ERROR
    assert "cannot be written" in capsys.readouterr().err


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("fedgrpo")
    proc = subprocess.run([str(exe), "prepare", "--partition", "round-robin"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == EXIT_USER_ERROR
    assert "Traceback" not in proc.stderr
    assert "use one of domain, dirichlet, iid" in proc.stderr


def test_a_run_directory_refuses_another_config(tmp_path, capsys):
    from fedgrpo.cli import check_resumable
    from fedgrpo.config import load_config
    from fedgrpo.errors import FedGRPOError

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(load_config(overrides={"train_steps": 10}).to_yaml())
    # More steps resume the same run...
    check_resumable(out, load_config(overrides={"train_steps": 20}))
    # ...but another learning rate is another experiment.
    with pytest.raises(FedGRPOError, match="learning_rate differ"):
        check_resumable(out, load_config(overrides={"learning_rate": 3e-4}))
