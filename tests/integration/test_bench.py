"""`fedgrpo bench` in miniature: every method end to end, exact bytes, the report, resume after a kill."""

from __future__ import annotations

import json

import pytest

from fedgrpo.bench import harness
from fedgrpo.bench.harness import plan, run_bench, write_bench
from fedgrpo.bench.methods import METHODS
from fedgrpo.config import build_config
from fedgrpo.errors import ConfigError

# A tiny budget on the shared tiny federation: a few steps of every method.
MINI = {"train_steps": 2, "prompts_per_step": 4, "save_steps": 1, "steps_per_generation": 1, "fedpetuning_rounds": 2, "dpsda_rounds": 2,
        "dpsda_candidates": 16, "dpsda_synthetic_size": 8, "dpsda_sft_epochs": 1}


@pytest.fixture(scope="module")
def mini_bench(tiny_config, prepared, tmp_path_factory):
    # `prepared` first: the session's models are built by its fixture (test_prepare checks that build).
    root = tmp_path_factory.mktemp("bench")
    config = build_config(cli_values={**tiny_config.to_flat(), **MINI})
    p = plan(config, None, [0], quick=False, work_root=root / "work")
    report = run_bench(p)
    json_path, md_path = write_bench(report, p, root / "results")
    return p, report, json_path, md_path


def test_every_method_is_in_the_report(mini_bench):
    _, report, json_path, md_path = mini_bench
    planned = [m for m in METHODS.values() if m.in_default_plan]
    assert list(report["summary"]) == [m.name for m in planned]
    markdown = md_path.read_text()
    for method in planned:
        assert f"| {method.label} |" in markdown
    for plot in ("bytes", "accuracy-vs-bytes", "curves", "accuracy-curves", "accuracy"):
        assert (md_path.parent / f"{md_path.stem}-{plot}.png").stat().st_size > 1000
    saved = json.loads(json_path.read_text())
    assert saved["env"]["commit"] and saved["config"]["train_steps"] == 2
    assert {g["goal"] for g in saved["metrics"]["goals"]} >= {
        "FedGRPO's wire bytes <= 1/100 of FedPETuning+SFT's at laptop scale (as measured)",
        "FedGRPO beats DPSDA-FL+GRPO on mean accuracy",
        "FedGRPO (answer-matching scorers) <= 1/10 of DPSDA-FL's bytes at the paper's scale over the closed form's whole range"}


def test_dpsda_synthetic_items_are_fresh_and_distinct(mini_bench):
    """PE's candidates come from the foundation API's fresh items: no synthetic item is an item of any
    split (the report states the share: 0), and none is padded in twice."""
    _, report, _, _ = mini_bench
    for name in ("dpsda_sft", "dpsda_grpo"):
        facts = report["runs"][name][0]["facts"]
        assert facts["in_a_split"] == 0.0
        # Each client's set is as large as asked unless its fresh pool's variations ran dry (the
        # noise comes from the client's own secret, so a run's draws differ): never larger, never padded.
        assert set(facts["synthetic_per_client"]) == {"client-0", "client-1"}
        assert all(6 <= n <= 8 for n in facts["synthetic_per_client"].values()), facts["synthetic_per_client"]
    pe = json.loads((mini_bench[0].work / "dpsda_sft" / "seed0" / "private-evolution.json").read_text())
    ids = [q["question_id"] for q in pe["synthetic"]]
    assert len(ids) == len(set(ids))


def test_the_dp_row_carries_dpsda_fls_guarantee(mini_bench):
    _, report, _, md_path = mini_bench
    dp = report["runs"]["fedgrpo_dp"][0]["facts"]["privacy"]["clients"]
    dpsda = report["runs"]["dpsda_sft"][0]["facts"]
    for client, entry in dp.items():
        records = entry["declared"]["records"]
        assert records["epsilon"] <= 4.0 and records["delta"] == pytest.approx(dpsda["delta"][client])
    assert "| FedGRPO, DP experts |" in md_path.read_text().split("## Privacy, same unit")[1]


def test_the_registry_is_the_one_list_of_methods(capsys):
    from fedgrpo.bench.methods import REGISTRY
    from fedgrpo.cli import main

    assert len({m.name for m in REGISTRY}) == len({m.label for m in REGISTRY}) == len(REGISTRY)
    assert all(callable(m.runner) for m in REGISTRY)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(m.name in help_text for m in REGISTRY)


def test_accuracy_curves_cover_every_checkpoint_of_the_training_methods(mini_bench):
    _, report, _, _ = mini_bench
    runs = {name: rs[0] for name, rs in report["runs"].items()}
    assert [c["step"] for c in runs["central_grpo"]["accuracy_curve"]] == [1, 2]  # save_steps 1, 2 steps
    assert [c["step"] for c in runs["fedpetuning_sft"]["accuracy_curve"]] == [1, 2]  # one per round
    assert runs["zero_shot"]["accuracy_curve"] == [] and runs["dpsda_sft"]["accuracy_curve"] == []
    last = runs["central_grpo"]["accuracy_curve"][-1]["mean"]
    assert last == pytest.approx(runs["central_grpo"]["mean_after"])  # the last checkpoint is the final model


def test_byte_totals_are_the_sum_of_the_recorded_messages(mini_bench):
    _, report, _, _ = mini_bench
    for name, runs in report["runs"].items():
        run = runs[0]
        for direction in ("down", "up"):
            # Both counts, for every method: the payload model and the wire bytes of every message.
            assert run["bytes"][direction] == sum(m[4] for m in run["messages"] if m[3] == direction), name
            assert run["wire_bytes"][direction] == sum(m[5] for m in run["messages"] if m[3] == direction), name
        assert run["wire_bytes"]["unrecorded"] == 0 and all(m[5] > 0 for m in run["messages"]), name
        communicates = METHODS[name].kind not in ("zero_shot",) and name != "central_grpo"
        assert (run["bytes"]["total"] > 0) == communicates, name
    # FedGRPO: calibration and every scoring round, both ways; FedPETuning: every round, every client.
    fedgrpo = report["runs"]["fedgrpo"][0]["messages"]
    assert {(m[0], m[3]) for m in fedgrpo} == {("calibrate", "down"), ("calibrate", "up"), ("score", "down"),
                                                 ("score", "up")}
    fedpet = report["runs"]["fedpetuning_sft"][0]["messages"]
    assert len(fedpet) == 2 * 2 * 2  # rounds x clients x both ways
    assert report["runs"]["fedpetuning_sft"][0]["bytes"]["total"] > 50 * report["runs"]["fedgrpo"][0]["bytes"]["total"]
    dpsda = report["runs"]["dpsda_sft"][0]
    assert dpsda["facts"]["epsilon"]["client-0"] == pytest.approx(4.0, rel=2e-3)


def test_a_killed_bench_resumes_without_redoing_finished_methods(mini_bench, monkeypatch):
    p, report, _, _ = mini_bench
    finished = {m.name: (p.work / m.name / "seed0" / "result.json").stat().st_mtime_ns for m in p.methods}
    (p.work / "dpsda_grpo" / "seed0" / "result.json").unlink()  # killed while its last method ran
    ran = []
    real = harness.run_method

    def spy(config, method, out, progress):
        ran.append(method.name)
        return real(config, method, out, progress)

    monkeypatch.setattr(harness, "run_method", spy)
    again = run_bench(p)
    assert ran == ["dpsda_grpo"]
    for name, mtime in finished.items():
        if name != "dpsda_grpo":
            assert (p.work / name / "seed0" / "result.json").stat().st_mtime_ns == mtime
    assert again["summary"]["fedgrpo"] == report["summary"]["fedgrpo"]
    assert again["runs"]["dpsda_grpo"][0]["after"] == report["runs"]["dpsda_grpo"][0]["after"]


def test_unknown_method_is_refused(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'fedsgd'"):
        plan(tiny_config, ["fedsgd"], None, quick=False, work_root=tmp_path)
    deployment = build_config(cli_values={**tiny_config.to_flat(), "engine": "deployment"})
    with pytest.raises(ConfigError, match="fedpetuning_sft, fedpetuning_grpo, dpsda_sft, dpsda_grpo run on"):
        plan(deployment, None, None, quick=False, work_root=tmp_path)
    assert plan(deployment, ["fedgrpo"], None, quick=False, work_root=tmp_path).methods[0].name == "fedgrpo"


def test_quick_keeps_data_and_models_and_cuts_training(tiny_config, tmp_path):
    quick = plan(tiny_config, None, None, quick=True, work_root=tmp_path)
    full = plan(tiny_config, None, None, quick=False, work_root=tmp_path)
    assert quick.seeds == (0,) and full.seeds == (0, 1, 2)
    assert quick.config.train.train_steps < full.config.train.train_steps
    assert quick.config.data == full.config.data and quick.config.models == full.config.models
    assert quick.work != full.work


def test_fedpetuning_on_flower_simulation_equals_embedded(mini_bench, tmp_path):
    """FedAvg.start on Flower's Simulation grid gives the embedded rounds' model and messages."""
    from fedgrpo.bench.methods import run_method

    p, report, _, _ = mini_bench
    embedded = report["runs"]["fedpetuning_sft"][0]
    config = build_config(cli_values={**p.config.to_flat(), "train_seed": 0, "engine": "simulation"})
    simulated = run_method(config, METHODS["fedpetuning_sft"], tmp_path / "sim")
    assert simulated["facts"]["engine"] == "simulation"
    assert simulated["after"] == embedded["after"]
    assert [c["loss"] for c in simulated["curve"]] == pytest.approx([c["loss"] for c in embedded["curve"]], rel=1e-5)
    key = sorted((m[1], m[2], m[3]) for m in simulated["messages"])
    assert key == sorted((m[1], m[2], m[3]) for m in embedded["messages"])  # every round, client and direction
    down = [m[4] for m in simulated["messages"] if m[3] == "down"]
    assert down == [m[4] for m in embedded["messages"] if m[3] == "down"]  # the same adapter down


def test_ablations_plan_one_fedgrpo_variant_per_value_next_to_the_reference_runs(tiny_config, tmp_path):
    p = plan(tiny_config, None, [0], quick=False, work_root=tmp_path, ablations=["neighbours=2,4", "encoder=ngram"])
    assert [m.name for m in p.methods] == ["central_grpo", "fedgrpo", "ablation-neighbours=2", "ablation-neighbours=4",
                                           "ablation-encoder=ngram"]
    assert p.methods[2].overrides == {"neighbours": "2"} and p.methods[2].kind == "fedgrpo"
    with pytest.raises(ConfigError, match="experts_per_question"):
        plan(tiny_config, None, [0], quick=False, work_root=tmp_path, ablations=["experts_per_question=3"])
    with pytest.raises(ConfigError, match="--ablation takes"):
        plan(tiny_config, None, [0], quick=False, work_root=tmp_path, ablations=["beta=0.1"])


def test_the_clients_ablation_shares_the_same_private_data_among_more_clients(tiny_config, tmp_path):
    """Fig. 3a: K clients hold the same private data between them (num_clients = K, the total kept)."""
    p = plan(tiny_config, ["fedgrpo"], [0], quick=False, work_root=tmp_path, ablations=["clients=4,6"])
    points = {m.name: m.overrides for m in p.methods if m.name.startswith("ablation-")}
    total = tiny_config.data.client_size * tiny_config.data.clients
    assert points == {"ablation-clients=4": {"num_clients": 4, "client_size": total // 4},
                      "ablation-clients=6": {"num_clients": 6, "client_size": round(total / 6)}}
    with pytest.raises(ConfigError, match="--ablation takes"):
        plan(tiny_config, None, [0], quick=False, work_root=tmp_path, ablations=["clients"])
