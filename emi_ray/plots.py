"""PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: list[dict[str, Any]], path: Path) -> None:
    from emi_ray.io import atomic_path

    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(epochs, [h["train_loss"] for h in history])
    ax[0].set(xlabel="epoch", ylabel="train MSE", title="training loss")
    ax[1].plot(epochs, [h["mean_pearson"] for h in history], label="validation mean r (EMA)")
    ax[1].set(xlabel="epoch", ylabel="mean Pearson r", title="validation")
    ax[1].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def ablation_chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of ablation rows (mean ± std over seeds), one panel per table."""
    from emi_ray.io import atomic_path

    plt = _pyplot()
    tables = [t for t in ("modules", "modalities") if any(r["table"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.5), squeeze=False)
    for ax, table in zip(axes[0], tables):
        sel = [r for r in rows if r["table"] == table]
        ax.bar([r["name"] for r in sel], [r["mean"] for r in sel], yerr=[r["std"] for r in sel], capsize=4)
        ax.set(title=table, ylabel="validation mean r")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
