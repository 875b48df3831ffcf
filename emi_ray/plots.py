"""PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

from emi_ray.io import atomic_path  # noqa: E402

# the validation score a history row carries: stage II's mean r, stage I's mean recall@1
SCORES = {"mean_pearson": ("validation mean r (EMA)", "mean Pearson r"), "mean_r1": ("held-out recall@1", "recall@1")}


def learning_curve(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and the validation score per epoch (either stage's history)."""
    key = next(k for k in SCORES if k in history[-1])
    label, ylabel = SCORES[key]
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(epochs, [h["train_loss"] for h in history])
    ax[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax[1].plot(epochs, [h[key] for h in history], label=label)
    ax[1].set(xlabel="epoch", ylabel=ylabel, title="validation")
    ax[1].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def ablation_chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of ablation rows (mean ± std over seeds), one panel per table."""
    tables = list(dict.fromkeys(r["table"] for r in rows))  # in the rows' order (modules, modalities, ...)
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


def _xs(trials: list[dict[str, Any]]) -> list[int]:
    """Each trial's x: its Optuna number, else its position."""
    return [t["number"] if t.get("number") is not None else i for i, t in enumerate(trials)]


def _scored(trials: list[dict[str, Any]], ran_all: bool) -> list[tuple[int, float]]:
    """(x, r) of the scored trials that ran all epochs (ran_all) or were stopped early (not ran_all)."""
    return [(x, t["mean_pearson"]) for x, t in zip(_xs(trials), trials)
            if t["mean_pearson"] is not None and (t.get("status") == "complete") == ran_all]


def best_so_far(trials: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(trial number, best validation mean r so far) over the trials that ran all epochs: the best that
    Optuna crowns and `train --best` trains; an ASHA-stopped trial's r is from fewer epochs, not a candidate."""
    line, best = [], -float("inf")
    for x, v in sorted(_scored(trials, ran_all=True)):
        best = max(best, v)
        line.append((x, best))
    return line


def optimisation_history(trials: list[dict[str, Any]], path: Path, title: str = "search history") -> None:
    """Each trial's best validation mean r in trial order, the running best, failures marked.

    `trials`: dicts with "number" (x), "mean_pearson" (None for failed), "status".
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    full, early = _scored(trials, ran_all=True), _scored(trials, ran_all=False)
    failed = [x for x, t in zip(_xs(trials), trials) if t["mean_pearson"] is None]
    if full:
        ax.scatter(*zip(*full), label="ran all epochs", color="tab:blue", zorder=3)
    if early:
        ax.scatter(*zip(*early), label="stopped early (ASHA)", color="tab:orange", marker="v", zorder=3)
    line = best_so_far(trials)
    if line:
        ax.step(*zip(*line), where="post", color="tab:green", label="best so far (ran all epochs)")
    scored = full + early
    if scored and failed:
        lo = min(v for _, v in scored)
        ax.scatter(failed, [lo] * len(failed), marker="x", color="tab:red", label="failed", zorder=3)
    ax.set(xlabel="trial (Optuna number)", ylabel="validation mean Pearson r (best epoch)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def param_importance(importances: dict[str, float], path: Path, title: str = "parameter importance") -> None:
    """Horizontal bars, most important on top (fANOVA importances summing to 1)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(items), 2) + 1.2))
    if items:
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    else:
        ax.text(0.5, 0.5, "too few scored trials to estimate importance", ha="center", va="center",
                transform=ax.transAxes)
    ax.set(xlabel="importance (fANOVA, share of variance of mean r)", title=title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
