"""Unit tests for fedgrpo.config: defaults, the flat-name index and help texts, merge precedence
(defaults < file < CLI), CLI text coercion, every invalid input giving a ConfigError that names the
fix, reading YAML/TOML files (flat and sectioned, malformed, missing, wrong suffix), the to_yaml
round trip, and the tiny presets matching fedgrpo.models.tiny."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

import fedgrpo.config as config_module
from fedgrpo.config import (
    DEFAULT_DOMAINS,
    FedGRPOConfig,
    build_config,
    field_index,
    load_config,
    read_config_file,
)
from fedgrpo.errors import ConfigError


def all_fields():
    for section in dataclasses.fields(FedGRPOConfig):
        section_type = config_module.section_type(section.name)
        for f in dataclasses.fields(section_type):
            yield section.name, f


# --- defaults and the field index ---------------------------------------------------------------


def test_defaults_build():
    config = build_config()
    assert config == FedGRPOConfig()
    assert config.data.domains == DEFAULT_DOMAINS
    assert config.data.clients == len(DEFAULT_DOMAINS)  # num_clients unset: one client per domain
    assert config.models.server_model.startswith("tiny:")


def test_random_selection_works_with_the_default_competence_threshold_but_weighting_needs_a_competence():
    # The threshold applies to graph and oracle selection only (random and all keep their M), so the
    # random-selection baseline runs on the defaults; weighting by competence needs one and is refused.
    assert load_config(overrides={"selection": "random"}).federation.competence_threshold > 0
    with pytest.raises(ConfigError, match="competence_weighting needs"):
        load_config(overrides={"selection": "random", "competence_weighting": True})


def test_flat_field_names_are_unique_across_sections():
    names = Counter(f.name for _, f in all_fields())
    assert [name for name, n in names.items() if n > 1] == []
    # The index sees every field (a duplicate would silently shadow another in the dict).
    assert len(field_index()) == sum(names.values())


def test_every_field_has_help_text():
    for section, f in all_fields():
        text = f.metadata.get("help", "")
        assert isinstance(text, str) and text.strip(), f"{section}.{f.name} has no help"


def test_to_flat_lists_every_field_once_in_declaration_order():
    assert list(FedGRPOConfig().to_flat()) == [f.name for _, f in all_fields()]


def test_sequence_defaults_must_be_tuples():
    # Lists as dataclass defaults would be shared mutable state; _f refuses them up front.
    with pytest.raises(TypeError):
        config_module._f(["arithmetic"], "help")


# --- precedence and coercion --------------------------------------------------------------------


def test_cli_values_override_file_values_which_override_defaults():
    config = build_config(
        file_values={"pool_size": 50, "aux_size": 5, "eval_size": 7},
        cli_values={"pool_size": "60"},
    )
    assert config.data.pool_size == 60  # CLI beats file
    assert config.data.aux_size == 5  # file beats default
    assert config.data.eval_size == 7
    assert config.data.client_size == FedGRPOConfig().data.client_size  # default kept


def test_cli_keys_may_be_kebab_case():
    assert build_config(cli_values={"pool-size": "500"}).data.pool_size == 500


@pytest.mark.parametrize(
    ("key", "text", "section", "expected"),
    [
        ("pool_size", "500", "data", 500),
        ("data_seed", "3", "data", 3),
        ("dirichlet_beta", "0.5", "data", 0.5),
        ("sft_learning_rate", "1e-3", "models", 0.001),
        ("eval_temperature", "2", "evaluation", 2.0),
        ("use_ground_truth", "true", "data", True),
        ("use_ground_truth", "True", "data", True),
        ("use_ground_truth", "false", "data", False),
        ("domains", "arithmetic,spelling", "data", ("arithmetic", "spelling")),
        ("domains", " arithmetic , rg:lcm ,", "data", ("arithmetic", "rg:lcm")),
        ("num_clients", "6", "data", 6),
        ("num_clients", "none", "data", None),
        ("cache_dir", "none", "models", None),
        ("cache_dir", "/tmp/fedgrpo-cache", "models", "/tmp/fedgrpo-cache"),
        ("output_dir", "runs/x", "output", "runs/x"),
    ],
)
def test_cli_text_is_coerced_to_the_declared_type(key, text, section, expected):
    value = getattr(getattr(build_config(cli_values={key: text}), section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_float_fields_accept_integers_from_files_as_floats():
    value = build_config(file_values={"dirichlet_beta": 2}).data.dirichlet_beta
    assert value == 2.0 and isinstance(value, float)


def test_load_config_accepts_typed_overrides():
    config = load_config(overrides={"pool_size": 30, "aux_size": 3, "domains": ["arithmetic", "algebra"]})
    data = config.data
    assert (data.pool_size, data.aux_size, data.domains) == (30, 3, ("arithmetic", "algebra"))


# --- invalid input: ConfigError naming the fix --------------------------------------------------


def error_message(file_values=None, cli_values=None) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(file_values, cli_values)
    return str(info.value)


def test_unknown_key_suggests_the_closest_name():
    message = error_message(cli_values={"pool_sise": "3"})
    assert "unknown config key 'pool_sise'" in message
    assert "did you mean 'pool_size'?" in message


def test_unknown_key_without_a_close_match_points_at_help():
    assert "fedgrpo config --help" in error_message(file_values={"zzzzzz": 1})


@pytest.mark.parametrize(
    ("cli_values", "expected"),
    [
        ({"domains": "arith"}, "unknown domain 'arith'"),
        ({"domains": "rg:rubiks_cube"}, "choose a generator that has one"),
        ({"domains": "rg:no_such_generator"}, "list them with `fedgrpo domains --all`"),
        ({"difficulty": "3"}, "lower difficulty"),
        # rg:<generator> has level 0 only
        ({"domains": "rg:lcm", "difficulty": "1"}, "lower difficulty"),
    ],
)
def test_domain_mistakes_are_refused_where_the_data_is_built_and_by_the_cli(cli_values, expected, capsys):
    # The config holds names only (it imports nothing above it); the data layer resolves them,
    # and the CLI does so as it loads a config, before any output or long work.
    from fedgrpo.cli import main
    from fedgrpo.data.gym import check_domains

    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        load_config(overrides=cli_values, check_data=lambda data: check_domains(data.domains, data.difficulty))
    flags = [a for key, value in cli_values.items() for a in ("--" + key.replace("_", "-"), *value.split(","))]
    assert main(["config", *flags]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("file_values", "cli_values", "expected"),
    [
        ({"pool_size": "3"}, None, "pool_size must be an integer"),  # file text is not parsed
        ({"pool_size": True}, None, "pool_size must be an integer"),  # bool is not an int
        ({"pool_size": 2.5}, None, "pool_size must be an integer"),
        (None, {"pool_size": "abc"}, "pool_size must be an integer"),
        (None, {"pool_size": "5.0"}, "pool_size must be an integer"),
        (None, {"pool_size": "none"}, "pool_size must be an integer"),  # not optional
        (None, {"dirichlet_beta": "lots"}, "dirichlet_beta must be a number"),
        (None, {"use_ground_truth": "yes"}, "use_ground_truth must be true or false"),
        ({"use_ground_truth": 1}, None, "use_ground_truth must be true or false"),
        ({"domains": "arithmetic"}, None, "domains must be a list of names"),
        ({"domains": ["arithmetic", 3]}, None, "domains must be a list of names"),
        ({"server_model": 3}, None, "server_model must be a string"),
    ],
)
def test_wrong_type_names_the_field_and_the_expected_type(file_values, cli_values, expected):
    assert expected in error_message(file_values, cli_values)


@pytest.mark.parametrize(
    ("cli_values", "expected"),
    [
        ({"aux_size": "3000"}, "lower aux_size or raise pool_size"),
        ({"domains": "arithmetic,spelling,arithmetic"}, "list each once"),
        ({"domains": ","}, "name at least one domain"),
        ({"difficulty": "-1"}, "difficulty must be 0 or more"),
        ({"partition": "random"}, "use one of domain, dirichlet, iid"),
        ({"num_clients": "2"}, "raise num_clients or use partition=dirichlet"),
        ({"num_clients": "0", "partition": "iid"}, "num_clients must be at least 1"),
        ({"partition": "dirichlet", "dirichlet_beta": "0"}, "dirichlet_beta must be > 0"),
        ({"partition": "dirichlet", "dirichlet_beta": "-1"}, "dirichlet_beta must be > 0"),
        ({"dirichlet_beta": "nan"}, "dirichlet_beta must be > 0"),
        ({"pool_size": "0"}, "pool_size must be at least 1"),
        ({"eval_size": "0"}, "eval_size must be at least 1"),
        ({"client_size": "0"}, "client_size must be at least 1"),
        ({"public_size": "-1"}, "public_size must be 0 or more"),
        ({"server_model": "tiny:huge"}, "use one of tiny:small, tiny:micro"),
        ({"expert_model": "tiny:"}, "unknown tiny preset"),
        ({"pretrain_steps": "-1"}, "pretrain_steps must be 0 or more"),
        ({"sft_batch_size": "0"}, "sft_batch_size must be at least 1"),
        ({"sft_learning_rate": "1.5"}, "sft_learning_rate must be in (0, 1)"),
        ({"eval_samples": "-1"}, "eval_samples must be 0 or more"),
        ({"eval_temperature": "0"}, "eval_temperature must be > 0"),
        ({"max_new_tokens": "0"}, "must be at least 1"),
        ({"dpsda_epsilon": "0"}, "dpsda_epsilon must be > 0"),
        ({"dpsda_delta": "1"}, "dpsda_delta must be in (0, 1)"),
        ({"dpsda_rounds": "0"}, "dpsda_rounds must be at least 1"),
        ({"fedpetuning_rounds": "0"}, "fedpetuning_rounds must be at least 1"),
        ({"fedpetuning_learning_rate": "2"}, "fedpetuning_learning_rate must be in (0, 1)"),
        ({"dpsda_threshold": "-1"}, "dpsda_threshold must be 0 or more"),
        ({"reward_epsilon": "0"}, "reward_epsilon must be > 0"),
        ({"score_replication": "true", "competence_weighting": "true"}, "turn one of them off"),
        ({"recheck_threshold": "1"}, "recheck_threshold must be in (0, 1)"),
        ({"probe_share": "0.6"}, "probe_share must be in [0, 0.5]"),
        ({"probe_share": "-0.1"}, "probe_share must be in [0, 0.5]"),
        ({"probe_share": "0.2"}, "raise probe_size to 125 or lower probe_share"),
        ({"probe_size": "-1"}, "probe_size must be 0 or more"),
        ({"spot_check_share": "1.5"}, "spot_check_share must be in [0, 1]"),
        ({"spot_check_share": "-0.01"}, "spot_check_share must be in [0, 1]"),
        ({"spot_check_share": "some"}, "spot_check_share must be a number"),
        ({"recheck_every": "4"}, "config key 'recheck_every' was replaced: use probe_share"),
        ({"recheck_items": "2"}, "config key 'recheck_items' was replaced: use probe_share"),
        ({"adversaries": "client-1:lie"}, "write EXPERT:BEHAVIOUR"),
        ({"robust_aggregation": "mode"}, "robust_aggregation must be one of mean, median, trimmed_mean"),
        ({"privacy_budget": "10"}, "privacy_budget needs reward_epsilon"),
        ({"reward_epsilon": "2", "privacy_budget": "1"}, "below one release"),
        ({"privacy_delta": "1"}, "privacy_delta must be in (0, 1)"),
        ({"reward_mechanism": "gaussian"}, "reward_mechanism must be one of randomized_response, laplace"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_fix(cli_values, expected):
    assert expected in error_message(cli_values=cli_values)


def test_public_size_zero_is_allowed():
    # The public pre-training pool is optional (a real model needs no pre-training).
    assert build_config(cli_values={"public_size": "0"}).data.public_size == 0


def test_domain_partition_accepts_as_many_clients_as_domains_and_dirichlet_fewer():
    assert build_config(cli_values={"num_clients": "4"}).data.clients == 4
    assert build_config(cli_values={"num_clients": "2", "partition": "dirichlet"}).data.clients == 2


def test_a_model_path_that_does_not_exist_is_rejected(tmp_path):
    missing = tmp_path / "no-such-model"
    message = error_message(cli_values={"server_model": str(missing)})
    assert "is not an existing directory" in message
    assert "nothing is downloaded" in message


def test_an_existing_model_directory_is_accepted(tmp_path):
    config = build_config(cli_values={"expert_model": str(tmp_path)})
    assert config.models.expert_model == str(tmp_path)


def test_a_model_path_that_is_a_file_is_rejected(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    message = error_message(cli_values={"server_model": str(weights)})
    assert "is not an existing directory" in message


def test_tiny_presets_match_the_architectures_in_models_tiny():
    from fedgrpo.models import tiny

    assert set(config_module.TINY_PRESETS) == set(tiny.PRESETS)
    assert len(config_module.TINY_PRESETS) == len(tiny.PRESETS)


# --- config files -------------------------------------------------------------------------------


def test_read_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("domains: [arithmetic, spelling]\npool-size: 500\nuse_ground_truth: true\n")
    values = read_config_file(path)
    assert values == {
        "domains": ["arithmetic", "spelling"], "pool_size": 500, "use_ground_truth": True,
    }
    config = build_config(values)
    assert config.data.domains == ("arithmetic", "spelling")
    assert config.data.use_ground_truth is True


def test_read_yml_file_with_sections(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("data:\n  pool_size: 50\nmodels:\n  model_seed: 3\n")
    assert read_config_file(path) == {"pool_size": 50, "model_seed": 3}


def test_read_empty_yaml_file_gives_no_values(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert read_config_file(path) == {}


def test_read_flat_toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'domains = ["arithmetic"]\nexperts_per_question = 1\npool_size = 10\naux_size = 2\nsft_learning_rate = 1e-3\n'
    )
    values = read_config_file(path)
    assert values == {
        "domains": ["arithmetic"], "experts_per_question": 1, "pool_size": 10, "aux_size": 2,
        "sft_learning_rate": 0.001,
    }
    config = build_config(values)
    assert (config.data.domains, config.data.pool_size, config.models.sft_learning_rate) == (
        ("arithmetic",), 10, 0.001,
    )


def test_read_sectioned_toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[data]\ndomains = ["arithmetic", "spelling"]\npool-size = 10\naux_size = 2\n'
        "[evaluation]\neval_samples = 0\n"
    )
    assert read_config_file(path) == {
        "domains": ["arithmetic", "spelling"], "pool_size": 10, "aux_size": 2, "eval_samples": 0,
    }
    assert build_config(read_config_file(path)).evaluation.eval_samples == 0


def test_unknown_key_in_a_section_is_reported(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[data]\npool_sizes = 10\n")
    with pytest.raises(ConfigError, match="did you mean 'pool_size'"):
        build_config(read_config_file(path))


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("domains: [arithmetic\npool_size: 3\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(path) in str(info.value)
    assert "malformed" in str(info.value) and "fix its syntax" in str(info.value)


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("pool_size = = 3\n")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(path) in str(info.value)
    assert "fix its syntax" in str(info.value)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- pool_size\n- 3\n")
    with pytest.raises(ConfigError, match="mapping of key: value pairs"):
        read_config_file(path)


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(path) in str(info.value)
    assert "--config" in str(info.value)


def test_wrong_suffix_is_rejected(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"pool_size": 3}')
    with pytest.raises(ConfigError, match=r"use a \.yaml, \.yml or \.toml file"):
        read_config_file(path)


def test_load_config_reads_the_file_then_applies_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("pool_size: 50\naux_size: 5\n")
    config = load_config(path, {"aux_size": "6"})
    assert (config.data.pool_size, config.data.aux_size) == (50, 6)


def test_yaml_exponent_floats_are_accepted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sft_learning_rate: 1e-3\n")
    assert load_config(path).models.sft_learning_rate == 0.001


# --- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cli_values",
    [
        {},
        {
            "domains": "arithmetic,rg:lcm",
            "num_clients": "3",
            "partition": "dirichlet",
            "dirichlet_beta": "0.3",
            "use_ground_truth": "true",
            "sft_learning_rate": "0.0001",
            "eval_temperature": "0.7",
            "cache_dir": "/tmp/cache dir: with colon",
            "output_dir": "123",  # a string that looks like a number must stay a string
        },
    ],
)
def test_to_yaml_round_trips_through_read_config_file(tmp_path, cli_values):
    config = build_config(cli_values=cli_values)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert build_config(read_config_file(path)) == config
