"""The bench's Markdown report and its plots (matplotlib, headless): Tables 1-2 and Fig. 2 analogues,
training curves, accuracy against bytes, the goals and the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedgrpo.bench.methods import METHODS


def _mb(n: float) -> str:
    return f"{n / 1e6:,.3f}" if n < 1e7 else f"{n / 1e6:,.0f}"


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def write_markdown(payload: dict[str, Any], path: Path, plan: Any) -> Path:
    report = payload["metrics"]
    everything = report["summary"]
    summary = {n: s for n, s in everything.items() if n in METHODS}  # the comparison; ablations apart
    config = payload["config"]
    plots = write_plots(report, summary, path.with_suffix("")) if summary else []
    domains = list(next(iter(everything.values()))["per_domain"]) if everything else []
    lines = [f"# FedGRPO bench{' (quick)' if report['quick'] else ''}", "",
             f"Created {payload['created']} at commit {payload['env']['commit']}"
             f"{' (dirty)' if payload['env']['dirty'] else ''} on {payload['env'].get('machine_label', '')} "
             f"({payload['env']['cpu_count']} CPU cores, {payload['env']['device']}); pipeline seeds "
             f"{', '.join(map(str, report['seeds']))} (each varies the base, the experts and training). Command: "
             f"`fedgrpo bench{' --quick' if report['quick'] else ''}`.", "",
             "## Accuracy (test split, greedy pass@1, %, mean ± std over pipeline seeds)", "",
             "| method | answers seen by | " + " | ".join(domains) + " | mean | gain | share of Central-GRPO's gain |",
             "|---|---|" + "---|" * len(domains) + "---|---|---|"]
    for name, s in summary.items():
        share = s["share_of_central_gain"]
        lines.append(f"| {s['label']} | {METHODS[name].answers} | "
                     + " | ".join(_cell(s["per_domain"][d]) for d in domains)
                     + f" | **{_cell(s['mean'])}** | {s['gain']['mean']:+.1f} | "
                     + (f"{100 * share:.0f}%" if share is not None and name != "central_grpo" else "") + " |")
    lines += ["", "## Communication (bytes over the whole run, both ways; mean over seeds)", "",
              "Two counts of every message: the payload model (`core.comm`: the values and texts a message "
              "carries) and the wire (its serialized size as it travels: Flower's serialization of its records, "
              "or the expert service's JSON body; docs/bench.md).", "",
              "| method | payload down | payload up | payload total (MB) | wire total (MB) | FedGRPO's share (wire) |",
              "|---|---|---|---|---|---|"]
    fed = (summary.get("fedgrpo", {}).get("wire_bytes") or {}).get("total")
    for name, s in summary.items():
        b, w = s["bytes"], s.get("wire_bytes") or {}
        ratio = f"1/{w['total'] / fed:,.1f}" if fed and w.get("total") else ""
        lines.append(f"| {s['label']} | {b['down']:,.0f} | {b['up']:,.0f} | {_mb(b['total'])} | "
                     f"{_mb(w['total']) if w.get('total') is not None else ''} | {ratio} |")
    lines += ["", "### At the paper's scale (closed forms, MB; `fedgrpo.core.costs`, docs/bench.md)", "",
              "FedGRPO is a range: answer-matching scorers from one to G distinct answers per block (the run's "
              "measured rate in the middle), and scorers that read the reasoning, from the run's candidate texts "
              "compressed as measured to the paper's 2,048-token candidates sent as they are.", "",
              "| server model | FedPETuning (LoRA r=8, all linear, 100 rounds x 10 clients) | DPSDA-FL | FedGRPO, "
              "answer-matching (low - measured - high) | FedGRPO, full texts (low - high) | FedGRPO rewards up only |",
              "|---|---|---|---|---|---|"]
    for model, row in report["paper_scale_bytes"].items():
        a, t = row["fedgrpo_range"]["answers"], row["fedgrpo_range"]["texts"]
        lines.append(f"| {model} | {_mb(row['fedpetuning'])} | {_mb(row['dpsda'])} | {_mb(a['low'])} - "
                     f"{_mb(a['measured'])} - {_mb(a['high'])} | {_mb(t['low'])} - {_mb(t['high'])} | "
                     f"{_mb(row['fedgrpo_rewards_up_only'])} |")
    lines += ["", "The paper's own Fig. 2 figures for FedPETuning cannot be derived from its description: their "
              "ratio across the three models matches no fixed-rank LoRA of them (docs/bench.md), and its figure "
              "for FedGRPO is neither the rewards alone nor rewards plus candidate texts.", "",
              "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else '**no**'} |" for g in report["goals"]]
    lines += ["", "## Budget", "",
              f"- Every method: server `{config['server_model']}`, domains {', '.join(config['domains'])}, "
              f"{config['pool_size']} training questions, {config['eval_size']} held-out items per domain, "
              f"{config['num_clients'] or len(config['domains'])} clients of {config['client_size']} private items.",
              f"- GRPO (Central-GRPO, FedGRPO, FedPETuning+GRPO, DPSDA-FL+GRPO): {config['train_steps']} optimizer "
              f"steps in all, {config['prompts_per_step']} questions per step, "
              f"{config['experts_per_question'] * config['generations_per_expert']} candidates per question "
              "(FedPETuning+GRPO: the steps shared over rounds x clients).",
              f"- FedPETuning: {config['fedpetuning_rounds']} rounds, every client every round, LoRA r="
              f"{config['fedpetuning_lora_rank']} alpha={config['fedpetuning_lora_alpha']} on every linear layer, "
              f"lr {config['fedpetuning_learning_rate']}, SFT {config['fedpetuning_local_epochs']} local epoch(s) "
              f"of batch {config['fedpetuning_batch_size']} (its paper: 100 rounds, 10% of 100 clients, r=8, 1 epoch).",
              f"- DPSDA-FL: Private Evolution with epsilon {config['dpsda_epsilon']} per client, delta "
              f"{config['dpsda_delta'] or '1/(n ln n)'}, {config['dpsda_rounds']} rounds of "
              f"{config['dpsda_candidates']} candidates, threshold {config['dpsda_threshold']} sigma, "
              f"{config['dpsda_synthetic_size']} synthetic items per client; SFT {config['dpsda_sft_epochs']} epochs.",
              "", "## Methods", ""]
    lines += [f"- **{METHODS[n].label}**: {METHODS[n].about}." for n in summary]
    lines += ["", "## Knobs and how they were chosen", "",
              "Every method's own settings at this run's values. Choices are made on the validation split "
              "(`docs/bench.md`, Tuning); tables report the test split.", "",
              "| method | knobs |", "|---|---|"]
    for name in summary:
        knobs = METHODS[name].knobs
        if knobs:
            lines.append(f"| {METHODS[name].label} | " + ", ".join(f"`{k}`={config.get(k)}" for k in knobs) + " |")
    guarantees = _guarantees(report)
    if guarantees:
        lines += ["", "## Privacy, same unit (one record of a client's private data), per client", "",
                  "| method | epsilon | delta | mechanism |", "|---|---|---|---|"] + guarantees
    for key, values in report.get("ablations", {}).items():
        lines += ["", f"## Ablation: {key} (FedGRPO without answers)", "",
                  f"| {key} | " + " | ".join(domains) + " | mean | gain | share of Central-GRPO's gain | routing hit rate "
                  "| bytes |", "|---|" + "---|" * len(domains) + "---|---|---|---|---|"]
        rows = dict(values)
        if "fedgrpo" in everything:
            rows = {f"{config[key]} (default)": "fedgrpo", **rows}
        for value, name in rows.items():
            s = everything.get(name)
            if s is None:
                continue
            share = s["share_of_central_gain"]
            lines.append(f"| {value} | " + " | ".join(_cell(s["per_domain"][d]) for d in domains)
                         + f" | **{_cell(s['mean'])}** | {s['gain']['mean']:+.1f} | "
                         + (f"{100 * share:.0f}%" if share is not None else "")
                         + (f" | {100 * s['routing_hit_rate']:.1f}%" if s.get("routing_hit_rate") is not None else " | ")
                         + f" | {s['bytes']['total']:,.0f} |")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "Wall time per method (s, mean over seeds): "
              + ", ".join(f"{s['label']} {s['wall_time_s']:.0f}" for s in everything.values()) + "."]
    path.write_text("\n".join(lines) + "\n")
    return path


def _guarantees(report: dict[str, Any]) -> list[str]:
    """Rows of the privacy table: DPSDA-FL's Private Evolution and FedGRPO's DP experts, per record."""
    rows = []
    for name in ("dpsda_sft", "dpsda_grpo"):
        for run in report["runs"].get(name, [])[:1]:
            eps, delta = run["facts"].get("epsilon") or {}, run["facts"].get("delta") or {}
            if eps:
                rows.append(f"| {METHODS[name].label} | {max(eps.values()):.2f} | {max(delta.values()):.3g} | "
                            "Gaussian noise on Private Evolution's vote histograms |")
    for name in ("fedgrpo_dp",):
        for run in report["runs"].get(name, [])[:1]:
            clients = ((run["facts"].get("privacy") or {}).get("clients") or {}).values()
            records = [c["declared"]["records"] for c in clients if c["declared"].get("records")]
            if records:
                rows.append(f"| {METHODS[name].label} | {max(r['epsilon'] for r in records):.2f} | "
                            f"{max(r['delta'] for r in records):.3g} | DP-SGD of every expert (noise "
                            f"{records[0]['noise_multiplier']:.3g}, sampling rate {records[0]['sampling_rate']:.3g}, "
                            f"{records[0]['steps']} steps); every reward is post-processing |")
    return rows


def write_plots(report: dict[str, Any], summary: dict[str, Any], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    labels = [s["label"] for s in summary.values()]
    totals = [max(s["bytes"]["total"], 1) for s in summary.values()]

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(labels, totals, color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("bytes over the run, both ways (log scale; 1 = none)")
    ax.set_title("Communication per method (Fig. 2 analogue)")
    fig.tight_layout()
    paths.append(_save(fig, stem, "bytes"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for s in summary.values():
        ax.errorbar(max(s["bytes"]["total"], 1), s["mean"]["mean"], yerr=s["mean"]["std"], fmt="o", label=s["label"])
    ax.set_xscale("log")
    ax.set_xlabel("bytes (log scale)")
    ax.set_ylabel("mean held-out pass@1 (%)")
    ax.set_title("Accuracy against communication")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, stem, "accuracy-vs-bytes"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in report["runs"].items():
        if not runs or name not in summary:
            continue
        curve = runs[0]["curve"]
        if curve and "reward" in curve[0] and name in METHODS and METHODS[name].kind != "fedpetuning":
            xs = [c["step"] for c in curve if c.get("reward") is not None]
            ys = [c["reward"] for c in curve if c.get("reward") is not None]
            axes[0].plot(xs, _smooth(ys), label=runs[0]["label"])
        elif curve:
            key = "reward" if "reward" in curve[0] else "loss"
            axes[1].plot([c["step"] for c in curve], [c.get(key) for c in curve], label=f"{runs[0]['label']} ({key})")
    axes[0].set_title("GRPO reward per step (seed 0, smoothed)")
    axes[0].set_xlabel("optimizer step")
    axes[1].set_title("Baselines: loss or reward per round / step (seed 0)")
    axes[1].set_xlabel("round (FedPETuning) or step (SFT)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, stem, "curves"))

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, runs in report["runs"].items():
        if name in summary and runs and runs[0].get("accuracy_curve"):
            curve = runs[0]["accuracy_curve"]
            ax.plot([c["step"] for c in curve], [100 * c["mean"] for c in curve], marker=".", label=runs[0]["label"])
    ax.set_xlabel("GRPO step (FedPETuning: round)")
    ax.set_ylabel("mean held-out pass@1 (%)")
    ax.set_title("Accuracy of each checkpoint (seed 0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, stem, "accuracy-curves"))

    domains = list(next(iter(summary.values()))["per_domain"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(summary))
    for i, s in enumerate(summary.values()):
        ax.bar([d + i * width for d in range(len(domains))], [s["per_domain"][d]["mean"] for d in domains],
               width, yerr=[s["per_domain"][d]["std"] for d in domains], label=s["label"])
    ax.set_xticks([d + 0.4 - width / 2 for d in range(len(domains))], domains)
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_title("Accuracy per domain (Tables 1-2 analogue)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(_save(fig, stem, "accuracy"))
    return paths


def _smooth(values: list[float], window: int = 10) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _save(fig: Any, stem: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = stem.parent / f"{stem.name}-{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
