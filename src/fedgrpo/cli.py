"""The `fedgrpo` command line.

Flags are generated from the config dataclasses (one ``--kebab-case`` flag per field), so the CLI, the
config file and the docs cannot drift apart. Parsing imports neither torch nor trl: ``fedgrpo --help``
is instant. A user mistake (:class:`FedGRPOError`) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from fedgrpo.config import FedGRPOConfig, field_index, field_type, load_config
from fedgrpo.durable import write_json_atomic
from fedgrpo.errors import FedGRPOError

EXIT_USER_ERROR = 2


# --- argument parsing -----------------------------------------------------------------------------

def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML config file (flags override it).")
    sections: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, f) in field_index().items():
        group = sections.setdefault(section, parser.add_argument_group(f"{section} settings"))
        flag = "--" + name.replace("_", "-")
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{f.metadata['help']} (default: {shown})".replace("%", "%%")  # argparse formats help with %
        hint = field_type(name)
        if hint is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(hint) is tuple:
            group.add_argument(flag, dest=name, nargs="+", metavar="NAME", default=argparse.SUPPRESS,
                               help=help_text)
        else:
            # A closed set of names shows them; the config checks the value (a one-line error).
            choices = f.metadata.get("choices")
            group.add_argument(flag, dest=name, metavar="|".join(choices) if choices else "VALUE",
                               default=argparse.SUPPRESS, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgrpo",
        description="FedGRPO: train a server language model with GRPO on rewards from private domain experts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("prepare", help="Build the splits, the server model and one expert per client "
                       "(cached), then print every model's accuracy per domain.")
    _add_config_flags(p)
    p = sub.add_parser("run", help="The whole FedGRPO run: prepare (cached), calibrate, train with GRPO on "
                       "expert rewards, evaluate. Rerun with the same --output-dir to resume.")
    _add_config_flags(p)
    p = sub.add_parser("bench", help="Every method (FedGRPO and its variants, Central-GRPO, zero-shot, "
                       "FedPETuning, DPSDA-FL) on one budget over seeds: accuracy, exact bytes, a Markdown "
                       "report with plots. Resumable: rerun the same command after a kill.")
    p.add_argument("--quick", action="store_true", help="A small budget: one seed, a sixth of the training "
                   "(same data and models).")
    from fedgrpo.bench.methods import method_help

    p.add_argument("--methods", nargs="+", metavar="METHOD", help="Only these methods (default: all: "
                   f"{method_help()}).")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="pipeline seeds, each setting model_seed, "
                   "train_seed and selection_seed: a new base, new experts, new training (default: 0 1 2; --quick: 0).")
    p.add_argument("--ablation", action="append", default=[], metavar="KEY=V1,V2,...", help="FedGRPO (no "
                   "answers) at each value, a table each (repeatable; KEY: experts_per_question, num_clients, "
                   "neighbours, encoder, competence_threshold, selection); alone it runs only the ablations.")
    p.add_argument("--work", metavar="DIR", default="runs/bench", help="Where finished runs are kept "
                   "(resume); a subdirectory per resolved config (default: runs/bench).")
    p.add_argument("--results", metavar="DIR", default="benchmarks/results", help="Where the report goes "
                   "(default: benchmarks/results).")
    _add_config_flags(p)
    p = sub.add_parser("up", help="A whole Flower deployment on this machine: a SuperLink and one SuperNode "
                       "plus expert service per client on 127.0.0.1 (TLS, SuperNode authentication), one "
                       "`fedgrpo run` through it, then every process stopped.")
    p.add_argument("--no-tls", action="store_true", help="Plain HTTP on the loopback (debugging only).")
    p.add_argument("--no-auth", action="store_true", help="No SuperNode authentication.")
    p.add_argument("--keep-running", action="store_true", help="Start the federation and keep it up "
                   "(until Ctrl-C) for `fedgrpo run --engine deployment` runs, instead of one run.")
    _add_config_flags(p)
    p = sub.add_parser("expert", help="Run a site's expert (deployment).")
    expert_sub = p.add_subparsers(dest="expert_command", required=True, metavar="ACTION")
    p = expert_sub.add_parser("serve", help="Serve one client's expert (its private data and loaded model) "
                              "on this machine's loopback for the site's ClientApp; runs until stopped.")
    p.add_argument("--expert-id", required=True, help="Which client this site is, e.g. client-0.")
    p.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default: 127.0.0.1).")
    p.add_argument("--port", type=int, default=8765, help="Port to listen on; 0 picks a free one (default: 8765).")
    p.add_argument("--ready-file", metavar="FILE", help="Write the service URL here once it answers.")
    p.add_argument("--data", metavar="FILE", help="This site's own private data: JSON Lines of "
                   '{"question", "answer"[, "generator", "domain", "question_id"]} (default: the '
                   "config's shard for --expert-id).")
    p.add_argument("--model", metavar="DIR", help="This site's own expert model, a local Hugging Face "
                   "directory (default: the config's base fine-tuned on the site's data, cached).")
    p.add_argument("--domain", metavar="NAME", help="The domain this site declares (default: the most "
                   "common domain of its data).")
    p.add_argument("--state-dir", metavar="DIR", help="This site's own state: its privacy secret and release "
                   "journal, kept across restarts (default: ~/.local/state/fedgrpo/<expert-id>). Never share it.")
    p.add_argument("--model-epsilon", type=float, metavar="EPS", help="With --model: the record-level DP epsilon "
                   "your expert was trained with, declared to the server (default: none declared).")
    p.add_argument("--model-delta", type=float, metavar="DELTA", help="With --model-epsilon: its delta.")
    _add_config_flags(p)
    p = sub.add_parser("supernode", help="Flower's `flower-supernode` (same flags, passed through) with one warm "
                       "ClientApp process for every message, Flower's 1 s object-pull retry cut to 20 ms and its "
                       "hard-coded 3 s / 0.5 s poll sleeps cut to FEDGRPO_SUPERNODE_POLL_S (default 0.2 s) / 20 ms: "
                       "a bare Deployment round trip costs about 0.5 s instead of 6.1 s.", add_help=False)
    p.add_argument("supernode_args", nargs=argparse.REMAINDER, metavar="FLOWER_SUPERNODE_ARGS")
    p = sub.add_parser("evaluate", help="Held-out pass@1 per domain (greedy) and mean sampled correctness.")
    p.add_argument("--model", metavar="DIR", help="Model directory to evaluate (default: the server model "
                   "from the config, built if needed).")
    _add_config_flags(p)
    p = sub.add_parser("graph", help="Show a run's confidence graph: each client's competence per domain "
                       "of the auxiliary set.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="Output directory of a `fedgrpo run` (holds graph.json).")
    p = sub.add_parser("domains", help="List the built-in domains and their generators.")
    p.add_argument("--all", action="store_true", help="Also list every reasoning-gym generator (rg:<name>).")
    p = sub.add_parser("config", help="Print the resolved configuration as YAML.")
    p.add_argument("--docs", action="store_true", help="Print the Markdown reference of every key instead.")
    p.add_argument("--run-config", action="store_true", help="Print it as the Flower App's "
                   "[tool.flwr.app.config] table instead (pyproject.toml; `flwr run -c` takes its keys).")
    _add_config_flags(p)
    return parser


def config_from_args(args: argparse.Namespace) -> FedGRPOConfig:
    """The config from `--config` and the flags, its domains checked at once (before any output)."""
    from fedgrpo.data.partition import check_data

    overrides = {name: getattr(args, name) for name in field_index() if hasattr(args, name)}
    config = load_config(args.config, overrides, check_data=check_data)
    from fedgrpo.privacy.plan import PrivacyPlan

    plan = PrivacyPlan.from_config(config)
    if plan.experts is not None and not config.data.uses_files:  # files: checked once they are read
        plan.experts.check(config.data.client_size)  # a target out of reach, before any work
    return config


# --- output directory and console -----------------------------------------------------------------

def prepare_output_dir(config: FedGRPOConfig, command: str) -> Path:
    """Create the run's output directory and prove it is writable before any long work starts."""
    chosen = config.output.output_dir or f"runs/{command}-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(chosen).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FedGRPOError(
            f"output directory {str(out)!r} cannot be written ({exc.strerror or exc}); "
            "choose another with --output-dir"
        ) from None
    return out


def start_outputs(config: FedGRPOConfig, command: str, resuming: bool = False) -> Path:
    """Every command's preamble: a writable output directory (checked before long work), the
    resolved config saved in it, and quiet libraries. A resumable run first checks the directory's
    earlier config."""
    out = prepare_output_dir(config, command)
    if resuming:
        check_resumable(out, config)
    (out / "config.yaml").write_text(config.to_yaml())
    from fedgrpo.engines.environment import prepare_process

    prepare_process()
    return out


# Keys a resumed run may change: more steps, or where the outputs and models live.
RESUMABLE_CHANGES = frozenset({"train_steps", "save_steps", "output_dir", "cache_dir"})


def check_resumable(out: Path, config: FedGRPOConfig) -> None:
    """A run directory resumes only the run that made it: any other change would silently mix two
    experiments (cached base accuracy, graph, routing, checkpoints)."""
    previous_path = out / "config.yaml"
    if not previous_path.is_file():
        return
    import yaml

    previous = yaml.safe_load(previous_path.read_text()) or {}
    current = config.to_flat()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and previous.get(k) != current[k])
    if changed:
        raise FedGRPOError(
            f"{str(out)!r} holds a run with another config ({', '.join(changed)} differ); to resume it, "
            "repeat its settings (see its config.yaml), or start a new run with another --output-dir"
        )


class RichProgress:
    """ProgressSink backed by rich: one bar per phase, removed when the phase ends."""

    def __init__(self, console: Any) -> None:
        self.console = console

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        started = time.perf_counter()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        self.console.print(f"[green]done[/] {description} ({time.perf_counter() - started:.1f} s)")

    def log(self, message: str) -> None:
        self.console.print(message)


# --- commands -------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def cmd_prepare(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    config = config_from_args(args)
    out = start_outputs(config, "prepare")
    from fedgrpo.training.prepare import prepare, report_prepared

    progress = RichProgress(console)
    started = time.perf_counter()
    prepared = prepare(config, progress, nonprivate=True)
    prepare_seconds = time.perf_counter() - started
    for name, hit in prepared.cache_hits.items():
        if hit:
            console.print(f"[dim]cache hit: {name}[/]")
    report = report_prepared(prepared, progress, prepare_seconds)

    domains = list(report.server)  # the generated domains, or your evaluation sets
    table = Table(title="Held-out greedy pass@1 (%) per domain; * = the expert's own domain")
    table.add_column("model")
    for d in domains:
        table.add_column(d, justify="right")
    table.add_column("mean", justify="right")
    server_row = [_pct(report.server[d].pass_at_1) for d in domains]
    table.add_row("server (base)", *server_row, _pct(sum(report.server[d].pass_at_1 for d in domains) / len(domains)))
    table.add_row("server, sampled T=1", *[_pct(report.server[d].sampled_mean) for d in domains], "")
    for expert_id, scores in report.experts.items():
        own = report.expert_domains[expert_id]
        cells = [_pct(scores[d].pass_at_1) + ("*" if d == own else "") for d in domains]
        mean = sum(scores[d].pass_at_1 for d in domains) / len(domains)
        table.add_row(f"{expert_id} ({own})", *cells, _pct(mean))
    console.print(table)
    if report.privacy:
        console.print(privacy_table(report))
    beats = report.experts_beat_server()
    console.print(
        f"GRPO signal: {_pct(report.signal_share)}% of {report.signal_probe} training questions have "
        f"8 samples at T=1 that are neither all right nor all wrong."
    )
    console.print(
        f"Experts beating the server in their own domain: {sum(beats.values())}/{len(beats)}. "
        f"Prepare {report.seconds['prepare']:.0f} s, evaluation {report.seconds['evaluate']:.0f} s."
    )
    for finding in report.diagnostics:  # per domain: at the edge? can it move? (training.diagnose)
        console.print(finding["message"], style="yellow" if finding["level"] == "warning" else None, markup=False,
                      soft_wrap=True)
    write_json_atomic(out / "prepare.json", {
        "config": config.to_flat(),
        "server_dir": str(prepared.server_dir),
        "expert_dirs": {k: str(v) for k, v in prepared.expert_dirs.items()},
        "report": report.to_dict(),
    })
    console.print(f"Results: {out / 'prepare.json'}")
    return 0


def privacy_table(report: Any) -> Any:
    """`prepare`'s table of DP-trained experts: each client's record-level guarantee and its expert's
    accuracy in its own domain with and without DP."""
    from rich.table import Table

    table = Table(title="DP-trained experts: record-level guarantee per client (whole run) and own-domain "
                  "greedy pass@1 (%)")
    for column in ("client", "epsilon", "delta", "noise multiplier", "clip", "sampling rate", "steps",
                   "with DP", "without DP"):
        table.add_column(column, justify="left" if column == "client" else "right")
    for expert_id, g in report.privacy.items():
        own = report.expert_domains[expert_id]
        without = report.nonprivate.get(expert_id, {}).get(own)
        table.add_row(f"{expert_id} ({own})", f"{g['epsilon']:.2f}", f"{g['delta']:g}", f"{g['noise_multiplier']:.3f}",
                      f"{g['clip_norm']:g}", f"{g['sampling_rate']:.3f}", str(g["steps"]),
                      _pct(report.experts[expert_id][own].pass_at_1), _pct(without.pass_at_1) if without else "")
    return table


def cmd_run(args: argparse.Namespace, console: Any) -> int:
    config = config_from_args(args)
    out = start_outputs(config, "run", resuming=True)
    from fedgrpo.engines.switch import run_engine

    m = run_engine(config, out, RichProgress(console))
    print_run_report(m, console)
    console.print(f"Results: {out / 'metrics.json'} (plots: reward.png, accuracy.png)")
    return 0


def cmd_bench(args: argparse.Namespace, console: Any) -> int:
    config = config_from_args(args)
    from fedgrpo.bench.harness import plan, run_bench, write_bench
    from fedgrpo.engines.environment import prepare_process

    bench_plan = plan(config, args.methods, args.seeds, args.quick, Path(args.work).expanduser(), args.ablation)
    prepare_process()
    report = run_bench(bench_plan, RichProgress(console))
    json_path, md_path = write_bench(report, bench_plan, Path(args.results).expanduser())
    from rich.table import Table

    table = Table(title="test-split greedy pass@1 (%), mean ± std over pipeline seeds")
    for column in ("method", "mean", "gain", "bytes", "share of Central-GRPO's gain"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, s in report["summary"].items():
        share = s["share_of_central_gain"]
        table.add_row(s["label"], f"{s['mean']['mean']:.1f} ± {s['mean']['std']:.1f}", f"{s['gain']['mean']:+.1f}",
                      f"{s['bytes']['total']:,.0f}",
                      f"{100 * share:.0f}%" if share is not None and name != "central_grpo" else "")
    console.print(table)
    for g in report["goals"]:
        console.print(f"{'[green]met[/]' if g['met'] else '[red]not met[/]'}  {g['goal']}: {g['measured']}")
    console.print(f"Report: {md_path} (data: {json_path})")
    return 0


def privacy_lines(privacy: dict[str, Any]) -> str:
    """The run report's privacy summary: per client, each guarantee with the unit it protects."""
    lines = ["Privacy per client (each epsilon names what it protects):"]
    for expert_id, c in privacy["clients"].items():
        parts = []
        records, labels = c["declared"].get("records"), c["declared"].get("labels")
        if records:
            parts.append(f"each record of its private data: epsilon {records['epsilon']:.2f} at delta {records['delta']:g} "
                         f"for the whole run (DP-SGD: noise {records['noise_multiplier']:.3g}, clip "
                         f"{records['clip_norm']:g}, sampling rate {records['sampling_rate']:.3g}, {records['steps']} steps)"
                         if "noise_multiplier" in records else
                         f"each record of its private data: epsilon {records['epsilon']:g} at delta {records['delta']:g} "
                         "(declared by the site)")
        if labels:
            parts.append(f"each private label: epsilon {labels['epsilon']:g} (randomised once, {labels['mechanism']})")
        values = c.get("values")
        if values:
            parts.append(f"one released value only: {max(values['server_count'], values['client_count'] or 0):,} "
                         f"distinct values compose to epsilon {values['epsilon']:,.4g} at delta {privacy['plan']['delta']:g}")
        accuracy = privacy.get("expert_accuracy", {}).get(expert_id)
        if accuracy:
            parts.append(f"its expert {_pct(accuracy['with_dp'])}% right in {accuracy['domain']} with DP, "
                         f"{_pct(accuracy['without_dp'])}% without")
        lines.append(f"  {expert_id}: " + ("; ".join(parts) if parts else "none (its expert was trained without DP)"))
    if privacy["plan"]["budget"]:
        lines.append(f"  budget {privacy['plan']['budget']:g} per client; stopped: "
                     f"{', '.join(privacy['stopped_by_budget']) or 'none'}"
                     + (f"; training stopped after step {privacy['training_stopped_at']} (every budget spent)"
                        if privacy["training_stopped_at"] is not None else ""))
    return "\n".join(lines)


def print_run_report(m: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"Held-out greedy pass@1 (%), rewards from {m['mode'].replace('_', ' ')}")
    for col in ("domain", "before", "after", "change"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for d in m["accuracy_before"]:
        b, a = m["accuracy_before"][d]["pass_at_1"], m["accuracy_after"][d]["pass_at_1"]
        table.add_row(d, _pct(b), _pct(a), f"{100 * (a - b):+.1f}")
    table.add_row("mean", _pct(m["mean_before"]), _pct(m["mean_after"]), f"{m['gain_points']:+.1f}")
    console.print(table)
    if m["routing"]:
        console.print(f"Routing ({m['routing']['method']}): {_pct(m['routing']['hit_rate'])}% of training "
                      "questions have their own domain's expert among the selected.")
        routing = Table(title="Selections per domain of question")
        experts = sorted({e for by in m["routing"]["table"].values() for e in by})
        routing.add_column("question domain")
        for e in experts:
            routing.add_column(e, justify="right")
        for d, by in m["routing"]["table"].items():
            routing.add_row(d, *[str(by.get(e, 0)) for e in experts])
        console.print(routing)
    totals = m["bytes"]["totals"]
    console.print(f"Bytes down {totals.get('down', 0):,} / up {totals.get('up', 0):,} "
                  f"(calibration {totals.get('calibrate_down', 0):,} / {totals.get('calibrate_up', 0):,}); "
                  f"expert failures: {m['failures'] or 'none'}; wall time {m['wall_time_s']:.0f} s.")
    if m.get("lost_experts"):
        console.print("Lost during training and re-routed to the next-best expert: " + ", ".join(
            f"{e} ({m['rerouted_questions'].get(e, 0)} questions; {why})" for e, why in m["lost_experts"].items()))
    checks = m.get("expert_checks")
    if checks:
        console.print("Re-check on probes with known answers: " + "; ".join(
            f"{e} agreed {c['agreed']:g} of {c['probe_values']} in {c['probe_groups']} probe groups"
            + (f", {c['spot_values']} values paired in spot checks" if c.get("spot_values") else "")
            + f" (accuracy {c['accuracy']:.2f})"
            + (f", with its peers {c['peer_agreed']} of {c['peer_values']}" if c.get("peer_values") else "")
            + (f", flagged at step {c['flagged_at_step']}: {c['response']}" if c["flagged"] else "")
            for e, c in checks.items()) + ".")
    privacy = m.get("privacy")
    if privacy:
        console.print(privacy_lines(privacy))
    fidelity = m.get("reward_fidelity")
    if fidelity:
        mean = sum(f["share"] for f in fidelity) / len(fidelity)
        console.print(f"Fidelity of the noisy channel: {100 * mean:.1f}% of advantage signs preserved (mean over "
                      f"{len(fidelity)} scoring rounds; per round in metrics.json, reward_fidelity).")
    for finding in [f for f in m.get("diagnostics") or [] if f["level"] == "warning"]:  # logged before training too
        console.print(finding["message"], style="yellow", markup=False, soft_wrap=True)


def declared_guarantee(args: argparse.Namespace) -> dict[str, Any] | None:
    """What a site declares of its own expert model (`--model-epsilon`, `--model-delta`)."""
    if args.model_epsilon is None and args.model_delta is None:
        return None
    if args.model is None:
        raise FedGRPOError("--model-epsilon declares the guarantee of your own --model; give --model, or drop it "
                           "(a model this site trains under expert_epsilon records its own guarantee)")
    if args.model_epsilon is None or not args.model_epsilon > 0:
        raise FedGRPOError("--model-epsilon must be a number > 0 (with --model-delta)")
    if args.model_delta is None or not 0 < args.model_delta < 1:
        raise FedGRPOError("--model-delta must be in (0, 1): the delta your model's epsilon holds at")
    return {"unit": "record", "mechanism": "declared", "epsilon": args.model_epsilon, "delta": args.model_delta}


def cmd_expert(args: argparse.Namespace, console: Any) -> int:
    config = config_from_args(args)
    from fedgrpo.engines.environment import prepare_process

    prepare_process()
    from fedgrpo.engines.expert_service import ExpertService
    from fedgrpo.engines.experts import build_site_expert

    guarantee = declared_guarantee(args)
    state_dir = Path(args.state_dir or f"~/.local/state/fedgrpo/{args.expert_id}").expanduser()
    expert = build_site_expert(config, args.expert_id, data_path=args.data, model_dir=args.model,
                               domain=args.domain, state_dir=state_dir, guarantee=guarantee)
    expert.warm_up()
    try:
        service = ExpertService(expert, host=args.host, port=args.port)
    except OSError as exc:
        raise FedGRPOError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                           "choose another --port") from None
    console.print(f"expert {expert.expert_id} ({expert.domain}) serving on {service.url}; "
                  f"give the site's SuperNode --node-config 'expert-url=\"{service.url}\"'")
    if args.ready_file:
        Path(args.ready_file).write_text(service.url)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        service.serve_forever()
    finally:
        service.stop()
    return 0


def _keep_federation_up(config: FedGRPOConfig, out: Path, args: argparse.Namespace, console: Any) -> int:
    import signal

    from fedgrpo.engines.local_deployment import start_local_federation

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with start_local_federation(config, out.resolve() / "deployment", tls=not args.no_tls, auth=not args.no_auth,
                                log=console.print) as deployment:
        certs = (f" --superlink-root-certificates {deployment.root_certificates}"
                 if deployment.root_certificates else "")
        console.print(f"Federation up. Run with the same config, e.g.:\n  fedgrpo run --engine deployment "
                      f"--superlink-address {deployment.address}{certs}\nCtrl-C stops every process.")
        try:
            while all(p.poll() is None for p in deployment.processes):
                time.sleep(1)
            console.print("a federation process exited; stopping the rest")
        except KeyboardInterrupt:
            pass
    return 0


def cmd_up(args: argparse.Namespace, console: Any) -> int:
    from dataclasses import replace

    config = config_from_args(args)
    config = replace(config, engine=replace(config.engine, engine="deployment"))
    out = start_outputs(config, "up", resuming=True)
    if args.keep_running:
        return _keep_federation_up(config, out, args, console)
    from fedgrpo.engines.local_deployment import run_local_deployment

    m = run_local_deployment(config, out, tls=not args.no_tls, auth=not args.no_auth, log=console.print)
    print_run_report(m, console)
    console.print(f"Results: {out / 'metrics.json'}; Flower and expert-service logs: {out / 'deployment' / 'logs'}")
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    config = config_from_args(args)
    if args.model and not Path(args.model).expanduser().is_dir():
        raise FedGRPOError(f"--model {args.model!r} is not a directory; give a saved model directory")
    out = start_outputs(config, "evaluate")
    from fedgrpo.data.partition import build_splits
    from fedgrpo.data.prompts import PromptStyle
    from fedgrpo.models.load import base_model_dir, load_model
    from fedgrpo.training.evaluate import evaluate_model, mean_over_domains

    progress = RichProgress(console)
    splits = build_splits(config.data)
    if args.model:
        model_dir = Path(args.model).expanduser()
    else:
        model_dir, _ = base_model_dir(config.models.server_model, splits.public, config.models, progress)
    model, tokenizer = load_model(model_dir)
    ev = config.evaluation
    n_eval = sum(len(v) for v in splits.eval.values())
    with progress.phase(f"evaluate {model_dir.name}", n_eval * (2 if ev.eval_samples else 1)) as advance:
        scores = evaluate_model(
            model, tokenizer, splits.eval, style=PromptStyle.from_config(config.prompts),
            samples=ev.eval_samples, temperature=ev.eval_temperature, max_new_tokens=ev.max_new_tokens,
            batch_size=ev.eval_batch_size, seed=config.data.data_seed, on_batch=advance,
        )
    table = Table(title=f"Held-out evaluation of {model_dir}")
    for col in ("domain", "items", "pass@1 greedy (%)", f"sampled mean, T={ev.eval_temperature} (%)"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for domain, s in scores.items():
        table.add_row(domain, str(s.n), _pct(s.pass_at_1), _pct(s.sampled_mean))
    table.add_row("mean", "", _pct(mean_over_domains(scores)), _pct(mean_over_domains(scores, "sampled_mean")))
    console.print(table)
    write_json_atomic(out / "evaluate.json", {
        "config": config.to_flat(),
        "model_dir": str(model_dir),
        "scores": {d: s.to_dict() for d, s in scores.items()},
        "mean_pass_at_1": mean_over_domains(scores),
        "mean_sampled": mean_over_domains(scores, "sampled_mean"),
    })
    console.print(f"Results: {out / 'evaluate.json'}")
    return 0


def cmd_graph(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    from fedgrpo.core.graph import ConfidenceGraph

    path = Path(args.run_dir).expanduser() / "graph.json"
    if not path.is_file():
        raise FedGRPOError(f"{str(path)!r} does not exist; give the output directory of a `fedgrpo run` "
                           "that calibrated (selection graph, no --use-ground-truth)")
    graph = ConfidenceGraph.load(path)
    per_domain = graph.per_domain()
    domains = sorted({d for by in per_domain.values() for d in by})
    table = Table(title=f"Confidence graph: correctness (%) on the {len(graph.aux_ids)} auxiliary items")
    table.add_column("client")
    for d in domains:
        table.add_column(d, justify="right")
    table.add_column("overall", justify="right")
    for expert_id, overall in zip(graph.expert_ids, graph.overall()):
        table.add_row(expert_id, *[_pct(per_domain[expert_id].get(d)) for d in domains], _pct(float(overall)))
    console.print(table)
    return 0


def cmd_domains(args: argparse.Namespace, console: Any) -> int:
    from fedgrpo.config import DEFAULT_DOMAINS
    from fedgrpo.data.gym import DOMAINS, NO_REFERENCE_ANSWER

    for name, spec in DOMAINS.items():
        mark = " (default)" if name in DEFAULT_DOMAINS else ""
        gens = ", ".join(g.name for g in spec.generators)
        console.print(f"{name}{mark}: {spec.description}; levels 0-{spec.max_difficulty}; generators: {gens}")
    if args.all:
        from reasoning_gym.factory import DATASETS

        usable = sorted(set(DATASETS) - NO_REFERENCE_ANSWER - {"composite"})
        console.print("Any reasoning-gym generator as a domain (level 0 only): " + ", ".join(f"rg:{g}" for g in usable))
    return 0


def cmd_supernode(args: argparse.Namespace, console: Any) -> int:
    from fedgrpo.engines.supernode import main as run_supernode

    return run_supernode(args.supernode_args)


def cmd_config(args: argparse.Namespace, console: Any) -> int:
    if args.docs:
        from fedgrpo.config import render_config_docs

        print(render_config_docs(), end="")
        return 0
    if args.run_config:
        print(config_from_args(args).to_run_config_toml(), end="")
        return 0
    print(config_from_args(args).to_yaml(), end="")
    return 0


COMMANDS = {"prepare": cmd_prepare, "run": cmd_run, "bench": cmd_bench, "up": cmd_up, "expert": cmd_expert,
            "supernode": cmd_supernode, "evaluate": cmd_evaluate, "graph": cmd_graph, "domains": cmd_domains,
            "config": cmd_config}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["supernode"]:
        # Every later argument is flower-supernode's (argparse would claim its --flags).
        args = argparse.Namespace(command="supernode", supernode_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    from rich.console import Console

    console = Console()
    try:
        return COMMANDS[args.command](args, console)
    except FedGRPOError as exc:
        print(f"fedgrpo: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedgrpo: interrupted; finished models stay cached and a rerun resumes from them",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
