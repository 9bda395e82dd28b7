"""Say when a domain cannot move, before GRPO spends its time on it.

GRPO moves the server on a domain only when three things hold there:

1. the base sometimes answers it right and sometimes wrong (a group whose candidates are all
   wrong, or all right, has equal rewards and teaches nothing): the edge pre-training put it at the
   edge of competence, and its accuracy is neither near 0 nor near 1;
2. some expert knows the domain better than the server (an expert no better than the server
   rewards the server's own mistakes as often as its right answers);
3. routing sends the domain's questions to that expert.

Measured (issue 20): on four reasoning-gym domains nobody tuned for, edge pre-training ran to its
4,000-step cap with two domains at 1-2% sampled accuracy, routing found the right expert for 53% of
questions, and the run ended at -1.0 points with nothing saying why. Each check below is a pure
function of plain dicts returning `Finding`s, one line each, naming what to try; `prepare` prints
them under its table and `run` logs them after calibration, before training, and keeps them in
``metrics.json`` (``diagnostics``). The thresholds are heuristics, stated with their reasons; a
finding is a warning, never an error: the run goes on.

The last two functions (`prepare_findings`, `run_findings`) gather those dicts from a prepared
federation: the pre-training log beside a tiny base (`models.load.PRETRAIN_LOG`; a model of your
own has none, so its edge is not checked), the evaluation scores, the confidence graph and the
routing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# A base answering less than this share of a domain right (sampled at T=1 where measured, else
# greedy) gives GRPO almost only all-wrong groups: at 5% a group of 8 is all wrong 66% of the time.
NO_SIGNAL_BELOW = 0.05
# ... and more than this share, almost only all-right groups (at 95%, 66% of groups of 8).
SATURATED_ABOVE = 0.95
# An expert must beat the server in its own domain by this much (greedy pass@1): about twice the
# standard error of the difference of two 600-item pass@1 estimates near 40%.
EXPERT_MARGIN = 0.05
# Routing must send at least this share of a domain's training questions to one of its own
# experts (the default federation routes 100%); below it, a fifth or more of the domain's
# questions are scored by experts that do not know it.
ROUTING_MIN = 0.8

LARGER_PRESET = {"tiny:micro": "tiny:small"}  # what `--server-model` to try next, by preset

INFO, WARNING = "info", "warning"


@dataclass(frozen=True)
class Finding:
    """One line about one domain: its edge status (info) or why it may not move (warning)."""

    domain: str
    kind: str  # edge_reached, edge_not_reached, no_signal, saturated, expert_not_better, routing_miss
    level: str  # INFO or WARNING
    message: str  # one line, with what to try

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _learn_more(larger_model: str | None) -> str:
    bigger = f"a larger preset (--server-model {larger_model}), " if larger_model else ""
    return f"try {bigger}an easier --difficulty, or more public items (--public-size)"


def edge_findings(log: Mapping[str, Any], target: float, larger_model: str | None = None) -> list[Finding]:
    """Per domain of an edge pre-training log (`models.pretrain.train_to_edge`'s: ``steps``,
    ``reached`` step or None per domain, ``checks`` with the sampled accuracy per domain): where
    it reached `target`, and a warning for each domain that never did.

    >>> log = {"steps": 4000, "reached": {"gcd": 900, "chains": None},
    ...        "checks": [{"step": 900, "accuracy": {"gcd": 0.36, "chains": 0.0}},
    ...                   {"step": 4000, "accuracy": {"gcd": 0.41, "chains": 0.02}}]}
    >>> [(f.domain, f.kind) for f in edge_findings(log, 0.35)]
    [('gcd', 'edge_reached'), ('chains', 'edge_not_reached')]
    """
    checks = log.get("checks") or [{"step": log.get("steps", 0), "accuracy": {}}]
    last = checks[-1]
    out = []
    for domain, step in log.get("reached", {}).items():
        now = last["accuracy"].get(domain)
        at_end = "" if now is None else f"{100 * now:.0f}%" + (
            "" if step == last["step"] else f" at the last check, step {last['step']:,}")
        if step is not None:
            out.append(Finding(domain, "edge_reached", INFO,
                               f"{domain}: at the edge: its sampled accuracy reached the target "
                               f"{100 * target:.0f}% at pre-training step {step:,}" + (f" ({at_end})" if at_end else "")))
        else:
            out.append(Finding(domain, "edge_not_reached", WARNING,
                               f"{domain}: never reached the edge target {100 * target:.0f}% in "
                               f"{log.get('steps', last['step']):,} pre-training steps"
                               + (f" ({at_end})" if at_end else "")
                               + f": GRPO has little to reinforce there; {_learn_more(larger_model)}"))
    return out


def signal_findings(accuracy: Mapping[str, float | None], measured: str,
                    larger_model: str | None = None, skip: Sequence[str] = ()) -> list[Finding]:
    """A warning per domain whose base accuracy (`measured` says how: "sampled at T=1" or
    "greedy") is near 0 or near 1: GRPO's groups there have equal rewards. Domains in `skip`
    (already reported, e.g. never at the edge) are left out.

    >>> [f.kind for f in signal_findings({"a": 0.01, "b": 0.5, "c": 0.99}, "greedy")]
    ['no_signal', 'saturated']
    """
    out = []
    for domain, value in accuracy.items():
        if value is None or domain in skip:
            continue
        if value < NO_SIGNAL_BELOW:
            out.append(Finding(domain, "no_signal", WARNING,
                               f"{domain}: the base answers {100 * value:.0f}% right ({measured}): almost "
                               f"every group is all wrong, GRPO gets no signal; {_learn_more(larger_model)}"))
        elif value > SATURATED_ABOVE:
            out.append(Finding(domain, "saturated", WARNING,
                               f"{domain}: the base already answers {100 * value:.0f}% right ({measured}): "
                               "almost every group is all right, little is left to learn; try a harder "
                               "--difficulty"))
    return out


def expert_findings(expert_accuracy: Mapping[str, float], server_accuracy: Mapping[str, float],
                    expert_domains: Mapping[str, str], measured: str) -> list[Finding]:
    """A warning per domain whose best own expert (an expert whose main domain it is) is not
    better than the server there by `EXPERT_MARGIN`. `expert_accuracy` is each expert's accuracy
    in its own domain (`measured` says on what); domains the server has no score for are skipped.

    >>> [f.domain for f in expert_findings({"c0": 0.8, "c1": 0.38}, {"a": 0.37, "p": 0.41},
    ...                                   {"c0": "a", "c1": "p"}, "greedy pass@1")]
    ['p']
    """
    best: dict[str, tuple[float, str]] = {}
    for expert, domain in expert_domains.items():
        if expert in expert_accuracy and (domain not in best or expert_accuracy[expert] > best[domain][0]):
            best[domain] = (expert_accuracy[expert], expert)
    out = []
    for domain, (value, expert) in best.items():
        server = server_accuracy.get(domain)
        if server is not None and value < server + EXPERT_MARGIN:
            out.append(Finding(domain, "expert_not_better", WARNING,
                               f"{domain}: its expert {expert} is not better than the server there "
                               f"({100 * value:.1f}% against {100 * server:.1f}%; {measured}): its rewards "
                               "cannot teach the server more than it knows; try more private items "
                               "(--client-size) or longer expert training (--expert-steps)"))
    return out


def routing_hit_rates(selected: Mapping[str, Sequence[str]], question_domains: Mapping[str, str],
                      expert_domains: Mapping[str, str]) -> dict[str, float]:
    """Per domain with an own expert, the share of its questions whose selected experts include
    one whose main domain it is.

    >>> routing_hit_rates({"q1": ("c0",), "q2": ("c1",), "q3": ("c1", "c0")},
    ...                   {"q1": "a", "q2": "a", "q3": "b"}, {"c0": "a", "c1": "b"})
    {'a': 0.5, 'b': 1.0}
    """
    owned = set(expert_domains.values())
    hits: dict[str, list[bool]] = {}
    for qid, experts in selected.items():
        domain = question_domains.get(qid)
        if domain in owned:
            hits.setdefault(domain, []).append(any(expert_domains.get(e) == domain for e in experts))
    return {d: sum(h) / len(h) for d, h in hits.items()}


def routing_findings(hit_rates: Mapping[str, float], expert_domains: Mapping[str, str]) -> list[Finding]:
    """A warning per domain whose questions reach one of its own experts less than `ROUTING_MIN`
    of the time.

    >>> [f.domain for f in routing_findings({"a": 0.5, "b": 1.0}, {"c0": "a", "c1": "b"})]
    ['a']
    """
    out = []
    for domain, rate in hit_rates.items():
        if rate < ROUTING_MIN:
            own = ", ".join(sorted(e for e, d in expert_domains.items() if d == domain))
            out.append(Finding(domain, "routing_miss", WARNING,
                               f"{domain}: only {100 * rate:.0f}% of its training questions are routed to its "
                               f"own expert ({own}); the rest are scored by experts that do not know it: "
                               "more auxiliary items (--aux-size) or a stronger expert make it easier to find"))
    return out


def diagnose(*, pretrain_log: Mapping[str, Any] | None = None, target: float = 0.0,
             larger_model: str | None = None, base_accuracy: Mapping[str, float | None] | None = None,
             base_measured: str = "sampled at T=1", expert_accuracy: Mapping[str, float] | None = None,
             server_accuracy: Mapping[str, float] | None = None, expert_domains: Mapping[str, str] | None = None,
             expert_measured: str = "greedy pass@1", routing_hits: Mapping[str, float] | None = None) -> list[Finding]:
    """Every check whose inputs are given: edge status per domain first (the log), then the
    warnings: no signal or saturated (`base_accuracy`; a domain never at the edge is reported
    once), an expert no better than the server, routing that misses the domain's experts."""
    findings = edge_findings(pretrain_log, target, larger_model) if pretrain_log else []
    unreached = [f.domain for f in findings if f.kind == "edge_not_reached"]
    if base_accuracy:
        findings += signal_findings(base_accuracy, base_measured, larger_model, skip=unreached)
    if expert_accuracy and server_accuracy and expert_domains:
        findings += expert_findings(expert_accuracy, server_accuracy, expert_domains, expert_measured)
    if routing_hits is not None and expert_domains:
        findings += routing_findings(routing_hits, expert_domains)
    return findings


# --- gathering the inputs from a prepared federation (reads the pre-training log) ---------------


def read_pretrain_log(model_dir: Path) -> dict[str, Any] | None:
    """The edge pre-training log saved beside a tiny base (None: a model of your own, or a base
    pre-trained for a fixed number of steps)."""
    from fedgrpo.models.load import PRETRAIN_LOG

    path = Path(model_dir) / PRETRAIN_LOG
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_findings(prepared: Any, server: Mapping[str, Any],
                     experts: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """`prepare`'s report (`prepared` a `training.prepare.Prepared`; `server` and `experts` map
    domains to `training.evaluate.DomainScore`s): edge status, the base's sampled accuracy per
    domain (greedy where not sampled), each expert's greedy pass@1 in its own domain against the
    server's."""
    config, domains = prepared.config, _expert_domains(prepared, {})
    sampled = any(s.sampled_mean is not None for s in server.values())
    return diagnose(
        pretrain_log=read_pretrain_log(prepared.server_dir), target=config.models.pretrain_target,
        larger_model=LARGER_PRESET.get(config.models.server_model),
        base_accuracy={d: s.sampled_mean if sampled else s.pass_at_1 for d, s in server.items()},
        base_measured="sampled at T=1" if sampled else "greedy",
        expert_accuracy={e: by[d].pass_at_1 for e, d in domains.items() if (by := experts.get(e)) and d in by},
        server_accuracy={d: s.pass_at_1 for d, s in server.items()}, expert_domains=domains,
        expert_measured="held-out greedy pass@1")


def run_findings(prepared: Any, before: Mapping[str, Any], calibration: Any = None,
                 declared: Mapping[str, str | None] | None = None) -> list[Finding]:
    """A run's, after calibration (`prepared` a `training.prepare.Prepared`, `before` the base's
    held-out `DomainScore`s, `calibration` a `training.calibrate.Calibration`, `declared` the
    domain each expert declared in its hello): edge status, the base's greedy accuracy per domain,
    each expert's competence in its own domain on the auxiliary set (the confidence graph,
    debiased under per-value LDP) against the server's greedy pass@1, and routing per domain of
    the training pool. Without `calibration` (ground truth asks no expert) only the first two."""
    import numpy as np

    from fedgrpo.privacy.plan import PrivacyPlan

    config, domains = prepared.config, _expert_domains(prepared, declared or {})
    competence: dict[str, float] = {}
    hits = None
    if calibration is not None:
        debias = PrivacyPlan.from_config(config).calibration_debias()
        per_domain = calibration.graph.per_domain()  # expert -> domain -> mean correctness on aux
        for expert, domain in domains.items():
            if domain in per_domain.get(expert, {}):
                value = np.array([per_domain[expert][domain]])  # (1,)
                competence[expert] = float(np.clip(debias(value) if debias else value, 0.0, 1.0)[0])
        hits = routing_hit_rates(calibration.routing.experts,
                                 {q.question_id: q.domain for q in prepared.splits.pool}, domains)
    greedy = {d: s.pass_at_1 for d, s in before.items()}
    return diagnose(
        pretrain_log=read_pretrain_log(prepared.server_dir), target=config.models.pretrain_target,
        larger_model=LARGER_PRESET.get(config.models.server_model), base_accuracy=greedy,
        base_measured="greedy", expert_accuracy=competence, server_accuracy=greedy, expert_domains=domains,
        expert_measured="the expert on the auxiliary set, the server held-out, greedy",
        routing_hits=hits)


def _expert_domains(prepared: Any, declared: Mapping[str, str | None]) -> dict[str, str]:
    """Each expert's main domain: the one it declared, else its shard's (as routing has it)."""
    return {s.expert_id: declared.get(s.expert_id) or s.main_domain for s in prepared.splits.clients}


def log_findings(findings: Sequence[Finding], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each finding's line through `log` (a progress sink's), warnings first marked; returns their
    JSON form (what `metrics.json` and ``prepare.json`` keep)."""
    for f in findings:
        log(("warning: " if f.level == WARNING else "") + f.message)
    return [f.to_dict() for f in findings]
