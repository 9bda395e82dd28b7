"""Engine settings and the Flower run config: fix-it errors, the run-config round trip, and the
pyproject's Flower App table kept equal to the config's defaults.

Run: pytest tests/unit/test_engine_config.py
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedgrpo.config import FedGRPOConfig, load_config
from fedgrpo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"engine": "ray"}, "unknown engine 'ray': use one of embedded, simulation, deployment"),
    ({"superlink_address": "localhost"}, "is not host:port; write e.g. 127.0.0.1:9191"),
    ({"superlink_address": "127.0.0.1:99999"}, "is not host:port"),
    ({"superlink_root_certificates": "/nonexistent/ca.crt"}, "is not a file; give the SuperLink's CA"),
    ({"node_wait_s": "0"}, "node_wait_s must be > 0"),
])
def test_engine_mistakes_name_their_fix(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides=overrides)


def test_engine_flags_parse_from_text():
    config = load_config(overrides={"engine": "simulation", "reroute_failed": "false", "node_wait_s": "5"})
    assert (config.engine.engine, config.engine.reroute_failed, config.engine.node_wait_s) == ("simulation", False, 5.0)


def test_the_run_config_round_trips_every_key():
    config = load_config(overrides={"domains": ("arithmetic", "spelling"), "num_clients": "3", "cache_dir": "/tmp/c",
                                    "grpo_args": ("bf16=false", "top_p=0.9"), "engine": "deployment"})
    run_config = config.to_run_config()
    # Flower allows only scalars: lists become comma-separated names, unset values empty strings.
    assert all(isinstance(v, (bool, int, float, str)) for v in run_config.values())
    assert run_config["domains"] == "arithmetic,spelling" and run_config["output-dir"] == ""
    assert FedGRPOConfig.from_run_config(run_config) == config


def test_an_unknown_run_config_key_is_refused_with_the_closest_one():
    with pytest.raises(ConfigError, match="did you mean 'aux_size'"):
        FedGRPOConfig.from_run_config({"aux-sise": 5})


def test_the_flower_app_in_pyproject_is_complete_and_current():
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "fedgrpo.apps:server_app", "clientapp": "fedgrpo.apps:client_app"}
    assert app["publisher"]
    # Regenerate with `fedgrpo config --run-config` when a default changes.
    assert app["config"] == FedGRPOConfig().to_run_config()


def test_the_run_config_table_is_valid_toml_for_any_text():
    config = load_config(overrides={"grpo_args": ('chat_template="a\\\\b"',)})
    table = tomllib.loads(config.to_run_config_toml())["tool"]["flwr"]["app"]["config"]
    assert FedGRPOConfig.from_run_config(table) == config


def test_the_repository_builds_as_a_flower_app_bundle(tmp_path):
    import os
    import subprocess

    from fedgrpo.transport.flower_runtime import flwr_executable

    # `flwr run .` first builds a FAB from the checkout: the pyproject must validate and the
    # bundle (sources only, fab-include) stay far below Flower's 10 MB cap.
    proc = subprocess.run([flwr_executable(), "build", "--app", str(ROOT)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (fab,) = tmp_path.glob("*.fab")
    assert fab.stat().st_size < 2_000_000


def test_cli_engine_mistakes_are_one_line_errors(capsys):
    from fedgrpo.cli import main

    assert main(["config", "--engine", "ray"]) == 2
    assert capsys.readouterr().err.strip() == (
        "fedgrpo: error: unknown engine 'ray': use one of embedded, simulation, deployment")
    tiny = ["--domains", "arithmetic", "spelling", "--pool-size", "40", "--aux-size", "8", "--public-size", "40",
            "--eval-size", "12", "--client-size", "30"]
    assert main(["expert", "serve", "--expert-id", "client-7", *tiny]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "fedgrpo: error: no client 'client-7' in this config; use one of client-0, client-1"


def test_overlap_rewards_parses_from_the_flag_the_run_config_and_text():
    from fedgrpo.cli import build_parser

    assert FedGRPOConfig().train.overlap_rewards is True  # on unless turned off
    assert build_parser().parse_args(["config", "--no-overlap-rewards"]).overlap_rewards is False
    assert build_parser().parse_args(["config", "--overlap-rewards"]).overlap_rewards is True
    assert FedGRPOConfig.from_run_config({"overlap-rewards": True}).train.overlap_rewards is True
    assert load_config(overrides={"overlap_rewards": "true"}).train.overlap_rewards is True
    with pytest.raises(ConfigError, match="overlap_rewards must be true or false"):
        load_config(overrides={"overlap_rewards": "sometimes"})


def test_overlap_rewards_refuses_sampling_experts_in_process_only():
    # In-process experts that sample fork the process-wide RNG the training thread samples from.
    with pytest.raises(ConfigError, match="set expert_samples=1, turn overlap off \(--no-overlap-rewards\), or use engine simulation or deployment"):
        load_config(overrides={"overlap_rewards": "true", "expert_samples": "3"})
    # Greedy experts, experts in other processes, or no experts at all (ground truth) are fine.
    for overrides in ({"expert_samples": "1"}, {"expert_samples": "3", "engine": "simulation"},
                      {"expert_samples": "3", "use_ground_truth": "true"}):
        assert load_config(overrides={"overlap_rewards": "true", **overrides}).train.overlap_rewards
