"""Plots of a run (matplotlib, headless): the reward curve and accuracy per domain before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(metrics: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    paths = []
    curve = [p for p in metrics["reward_curve"] if p.get("reward") is not None]
    if curve:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p["step"] for p in curve], [p["reward"] for p in curve], lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean reward")
        ax.set_title(f"Reward per step ({metrics['mode']})")
        fig.tight_layout()
        paths.append(out / "reward.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    before, after = metrics["accuracy_before"], metrics["accuracy_after"]
    domains = list(before)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(domains))
    ax.bar([i - 0.2 for i in x], [100 * before[d]["pass_at_1"] for d in domains], 0.4, label="before")
    ax.bar([i + 0.2 for i in x], [100 * after[d]["pass_at_1"] for d in domains], 0.4, label="after")
    ax.set_xticks(list(x), domains)
    ax.set_ylabel("held-out pass@1 (%)")
    ax.set_title("Accuracy per domain")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
