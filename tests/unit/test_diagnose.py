"""`training.diagnose`: the per-domain checks that say, before GRPO, why a domain may not move.

The pure checks on hand-made dicts, then the two gatherers on a crafted federation: a pre-training
log in a model directory (the issue's case: two domains never reached the edge), evaluation scores,
a confidence graph and a routing. Run: pytest tests/unit/test_diagnose.py
"""

from __future__ import annotations

import doctest
import json
from types import SimpleNamespace

import numpy as np

import fedgrpo.training.diagnose as diagnose_module
from fedgrpo.config import load_config
from fedgrpo.core.graph import build_confidence_graph
from fedgrpo.data.partition import ClientShard
from fedgrpo.data.tasks import Question
from fedgrpo.models.load import PRETRAIN_LOG
from fedgrpo.training.calibrate import Calibration, Routing
from fedgrpo.training.diagnose import (
    diagnose,
    edge_findings,
    expert_findings,
    log_findings,
    prepare_findings,
    routing_findings,
    routing_hit_rates,
    run_findings,
    signal_findings,
)
from fedgrpo.training.evaluate import DomainScore

DOMAINS = ("sequences", "counting", "chains", "gcd")
# The issue's case: edge pre-training ran to its 4,000-step cap with two domains at 1-2% sampled.
CAPPED_LOG = {
    "steps": 4000,
    "reached": {"sequences": 1200, "counting": 600, "chains": None, "gcd": None},
    "checks": [
        {"step": 600, "accuracy": {"sequences": 0.2, "counting": 0.4, "chains": 0.0, "gcd": 0.0}},
        {"step": 1200, "accuracy": {"sequences": 0.36, "counting": 0.45, "chains": 0.01, "gcd": 0.01}},
        {"step": 4000, "accuracy": {"sequences": 0.41, "counting": 0.52, "chains": 0.01, "gcd": 0.02}},
    ],
}


def _kinds(findings):
    return [(f.domain, f.kind) for f in findings]


def test_the_docstring_examples_run():
    assert doctest.testmod(diagnose_module).failed == 0


def test_a_domain_that_never_reached_the_edge_is_a_warning_with_its_accuracy_and_what_to_try():
    findings = edge_findings(CAPPED_LOG, 0.35, larger_model="tiny:small")
    # Every domain of the log gets a line: where it reached the edge, or that it never did.
    assert _kinds(findings) == [("sequences", "edge_reached"), ("counting", "edge_reached"),
                                ("chains", "edge_not_reached"), ("gcd", "edge_not_reached")]
    gcd = findings[-1]
    assert gcd.level == "warning"
    # The line names the cap, the last sampled accuracy, and the three things to try.
    assert "4,000 pre-training steps" in gcd.message and "2% at the last check" in gcd.message
    for remedy in ("--server-model tiny:small", "--difficulty", "--public-size"):
        assert remedy in gcd.message
    assert "\n" not in gcd.message  # one line
    assert findings[0].level == "info" and "step 1,200" in findings[0].message


def test_without_a_larger_preset_the_advice_leaves_it_out():
    message = edge_findings(CAPPED_LOG, 0.35, larger_model=None)[-1].message
    assert "--server-model" not in message and "--difficulty" in message


def test_accuracy_near_zero_or_one_means_no_grpo_signal():
    found = signal_findings({"a": 0.049, "b": 0.05, "c": 0.95, "d": 0.951}, "sampled at T=1")
    # Strictly below 5% and strictly above 95% (the bounds themselves still give mixed groups).
    assert _kinds(found) == [("a", "no_signal"), ("d", "saturated")]
    assert "sampled at T=1" in found[0].message and "harder --difficulty" in found[1].message
    # An unmeasured domain (None) and a skipped one say nothing.
    assert signal_findings({"a": None, "b": 0.0}, "greedy", skip=["b"]) == []


def test_an_expert_no_better_than_the_server_is_named():
    domains = {"client-0": "arithmetic", "client-3": "products"}
    found = expert_findings({"client-0": 0.808, "client-3": 0.380}, {"arithmetic": 0.368, "products": 0.407},
                            domains, "held-out greedy pass@1")
    # The README's products expert (38.0 against the server's 40.7) is flagged, arithmetic (80.8) not.
    assert _kinds(found) == [("products", "expert_not_better")]
    assert "client-3" in found[0].message and "38.0% against 40.7%" in found[0].message
    # A margin of 5 points: 44 against 40 is not enough, 46 is.
    assert expert_findings({"e": 0.44}, {"d": 0.40}, {"e": "d"}, "m")
    assert not expert_findings({"e": 0.46}, {"d": 0.40}, {"e": "d"}, "m")


def test_the_best_of_several_experts_of_a_domain_counts_and_unscored_domains_are_skipped():
    domains = {"c0": "a", "c1": "a", "c2": "b"}
    assert not expert_findings({"c0": 0.1, "c1": 0.9, "c2": 0.1}, {"a": 0.4}, domains, "m")


def test_routing_hit_rate_per_domain_and_its_warning():
    experts = {"c0": "algebra", "c1": "gcd", "c2": "gcd"}
    selected = {"q1": ("c1", "c0"), "q2": ("c0",), "q3": ("c2",), "q4": ("c0",), "q5": ("c0",)}
    domains = {"q1": "gcd", "q2": "gcd", "q3": "gcd", "q4": "algebra", "q5": "counting"}
    # gcd: q1 and q3 reach one of its two experts, q2 does not; counting has no expert of its own.
    hits = routing_hit_rates(selected, domains, experts)
    assert hits == {"gcd": 2 / 3, "algebra": 1.0}
    found = routing_findings(hits, experts)
    assert _kinds(found) == [("gcd", "routing_miss")]
    assert "67%" in found[0].message and "c1, c2" in found[0].message and "--aux-size" in found[0].message


def test_a_domain_never_at_the_edge_is_reported_once():
    findings = diagnose(pretrain_log=CAPPED_LOG, target=0.35,
                          base_accuracy={"sequences": 0.3, "counting": 0.5, "chains": 0.01, "gcd": 0.02})
    # chains and gcd are near 0 too, but their edge warning already says so, with the same advice.
    assert [k for _, k in _kinds(findings)].count("no_signal") == 0
    assert [k for _, k in _kinds(findings)].count("edge_not_reached") == 2


def test_nothing_given_nothing_found():
    assert diagnose() == []


def test_log_findings_prints_one_line_each_and_returns_the_json_form():
    lines: list[str] = []
    out = log_findings(edge_findings(CAPPED_LOG, 0.35), lines.append)
    assert len(lines) == 4 and lines[2].startswith("warning: chains: never reached")
    assert out[2] == {"domain": "chains", "kind": "edge_not_reached", "level": "warning",
                      "message": lines[2].removeprefix("warning: ")}
    json.dumps(out)  # what metrics.json and prepare.json keep


# --- the gatherers, on a crafted federation ---------------------------------------------------


def _question(i: int, domain: str) -> Question:
    return Question(f"{domain}-{i}", domain, domain, f"q {domain} {i}", None, {})


def _prepared(tmp_path, log=CAPPED_LOG, **overrides):
    server_dir = tmp_path / "base"
    server_dir.mkdir()
    if log is not None:
        (server_dir / PRETRAIN_LOG).write_text(json.dumps(log))
    clients = tuple(ClientShard(f"client-{k}", (_question(0, d),)) for k, d in enumerate(DOMAINS))
    pool = tuple(_question(i, d) for d in DOMAINS for i in range(4))
    config = load_config(overrides={"domains": DOMAINS, **overrides})
    return SimpleNamespace(config=config, server_dir=server_dir,
                           splits=SimpleNamespace(clients=clients, pool=pool))


def _score(greedy: float, sampled: float | None = None) -> DomainScore:
    return DomainScore(600, greedy, sampled, None)


def test_prepare_reports_the_issue_case(tmp_path):
    prepared = _prepared(tmp_path)
    server = {"sequences": _score(0.90, 0.97), "counting": _score(0.47, 0.45), "chains": _score(0.02, 0.01),
              "gcd": _score(0.40, 0.02)}
    experts = {"client-0": {"sequences": _score(0.99)}, "client-1": {"counting": _score(0.46)},
               "client-2": {"chains": _score(0.5)}, "client-3": {"gcd": _score(0.9)}}
    found = _kinds(prepare_findings(prepared, server, experts))
    assert found == [
        ("sequences", "edge_reached"), ("counting", "edge_reached"),
        ("chains", "edge_not_reached"), ("gcd", "edge_not_reached"),
        # sequences answers 97% of its samples right: saturated. chains and gcd are near 0 too, but
        # their edge warning already says so.
        ("sequences", "saturated"),
        ("counting", "expert_not_better"),  # 46% against the server's 47%
    ]
    # The default server preset is tiny:micro: the advice names the larger one.
    assert "--server-model tiny:small" in prepare_findings(prepared, server, experts)[2].message


def test_a_model_of_your_own_has_no_edge_log_and_gets_the_other_checks(tmp_path):
    prepared = _prepared(tmp_path, log=None)
    server = {d: _score(0.5) for d in DOMAINS} | {"chains": _score(0.0)}  # greedy only: not sampled
    found = prepare_findings(prepared, server, {})
    assert _kinds(found) == [("chains", "no_signal")]
    assert "(greedy)" in found[0].message


def test_a_run_checks_routing_and_the_experts_competence_from_calibration(tmp_path):
    prepared = _prepared(tmp_path)
    experts = [s.expert_id for s in prepared.splits.clients]
    aux_domains = [d for d in DOMAINS for _ in range(5)]
    # Each expert's competence on the auxiliary items of its own domain: 0.8, 0.4, 0.8, 0.8.
    def row(own: str) -> list[float]:  # right on the first 4 (counting: 2) of its domain's 5 items
        right = 2 if own == "counting" else 4
        return [1.0 if d == own and i % 5 < right else 0.0 for i, d in enumerate(aux_domains)]

    correctness = np.array([row(own) for own in DOMAINS])  # (K, N)
    graph = build_confidence_graph(experts, [f"a{i}" for i in range(len(aux_domains))], aux_domains,
                                   np.eye(len(aux_domains)), correctness)
    # chains' questions go to client-2 half of the time; everyone else's always to their own expert.
    selected = {q.question_id: (f"client-{DOMAINS.index(q.domain)}",) for q in prepared.splits.pool}
    selected["chains-0"] = selected["chains-1"] = ("client-0",)
    calibration = Calibration(graph, Routing(selected, hit_rate=0.875), {})
    before = {"sequences": _score(0.3), "counting": _score(0.45), "chains": _score(0.3), "gcd": _score(0.3)}
    found = _kinds(run_findings(prepared, before, calibration, {}))
    assert found == [("sequences", "edge_reached"), ("counting", "edge_reached"),
                     ("chains", "edge_not_reached"), ("gcd", "edge_not_reached"),
                     ("counting", "expert_not_better"),  # 40% on its auxiliary items against 45%
                     ("chains", "routing_miss")]  # 50%
    # A domain an expert declares in its hello wins over its shard's: client-2 now claims gcd, so
    # chains has no expert of its own (nothing to route to) and gcd two.
    declared = _kinds(run_findings(prepared, before, calibration, {"client-2": "gcd"}))
    assert ("chains", "routing_miss") not in declared


def test_a_ground_truth_run_checks_only_the_base(tmp_path):
    prepared = _prepared(tmp_path, use_ground_truth=True)
    before = {d: _score(0.3) for d in DOMAINS} | {"sequences": _score(0.99)}
    found = _kinds(run_findings(prepared, before, None, None))
    assert found[-1] == ("sequences", "saturated") and len(found) == 5


def test_the_run_report_repeats_the_warnings_and_not_the_edge_status():
    from rich.console import Console

    from fedgrpo.cli import print_run_report

    findings = [f.to_dict() for f in edge_findings(CAPPED_LOG, 0.35)]
    metrics = {"mode": "experts", "accuracy_before": {"gcd": {"pass_at_1": 0.3}}, "accuracy_after": {"gcd": {"pass_at_1": 0.3}},
               "mean_before": 0.3, "mean_after": 0.3, "gain_points": 0.0, "routing": None, "bytes": {"totals": {}},
               "failures": {}, "wall_time_s": 1.0, "diagnostics": findings}
    console = Console(record=True, width=80)
    print_run_report(metrics, console)
    text = console.export_text()
    # The edge status was logged before training; after it, only what went wrong, one line each.
    assert "chains: never reached" in text and "gcd: never reached" in text and "sequences: at the edge" not in text
    assert next(line for line in text.splitlines() if "never reached" in line).endswith("(--public-size)")
