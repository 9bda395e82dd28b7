"""Engine settings and the Flower run config: fix-it errors, the run-config round trip, and the
pyproject's Flower App table kept equal to the config's defaults.

Run: pytest tests/unit/test_engine_config.py
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedgrpo.config import FedGRPOConfig, build_config, load_config
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

    from fedgrpo.engines.deployment import flwr_executable

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


def test_overlap_rewards_is_auto_by_default_and_parses_from_every_source():
    from fedgrpo.cli import build_parser

    assert FedGRPOConfig().train.overlap_rewards == "auto"
    assert build_parser().parse_args(["config", "--overlap-rewards", "off"]).overlap_rewards == "off"
    assert FedGRPOConfig.from_run_config({"overlap-rewards": "on"}).train.overlap_rewards == "on"
    assert load_config(overrides={"overlap_rewards": "on"}).train.overlap_rewards == "on"
    # YAML reads on/off/true/false as booleans: they mean on and off.
    assert build_config(file_values={"overlap_rewards": False}).train.overlap_rewards == "off"
    assert build_config(file_values={"overlap_rewards": True}).train.overlap_rewards == "on"
    with pytest.raises(ConfigError, match="overlap_rewards must be one of auto, on, off"):
        load_config(overrides={"overlap_rewards": "sometimes"})


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, False),  # embedded: nothing measurable to hide, TRL's public API only
    ({"engine": "simulation"}, False),
    ({"engine": "deployment"}, True),  # where the round trip costs enough to hide
    ({"engine": "deployment", "use_ground_truth": "true"}, False),  # ground truth asks no expert
    ({"overlap_rewards": "on"}, True),
    ({"engine": "deployment", "overlap_rewards": "off"}, False),
])
def test_auto_overlap_is_on_for_the_deployment_engine_only(overrides, expected):
    assert load_config(overrides=overrides).uses_overlap is expected


def test_overlap_rewards_refuses_sampling_experts_in_process_only():
    # In-process experts that sample fork the process-wide RNG the training thread samples from.
    with pytest.raises(ConfigError, match=r"set expert_samples=1, overlap_rewards=off \(or auto\), or use engine "
                                          "simulation or deployment"):
        load_config(overrides={"overlap_rewards": "on", "expert_samples": "3"})
    # Greedy experts, experts in other processes, no experts at all (ground truth), or auto (off on
    # the embedded engine) are fine.
    for overrides in ({"overlap_rewards": "on", "expert_samples": "1"},
                      {"overlap_rewards": "on", "expert_samples": "3", "engine": "simulation"},
                      {"overlap_rewards": "on", "expert_samples": "3", "use_ground_truth": "true"},
                      {"expert_samples": "3"}):
        assert load_config(overrides=overrides).federation.expert_samples >= 1
