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
