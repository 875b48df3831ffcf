"""`--confirm-seeds`: re-train a search's top trials with fresh seeds; the best is chosen by the mean."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from emi_ray.io import atomic_write_text, is_dir, remove_tree
from emi_ray.tune.events import Listener, Notify
from emi_ray.tune.experiment import fit_grid, mean_std, search_run
from emi_ray.tune.settings import SearchSettings


def seed_list(seed: int, n: int) -> list[int]:
    """Confirmation seeds: fresh ones (the search trial's own seed is selection-biased)."""
    return [seed + 1 + i for i in range(n)]


def confirm_top(run_dir: Path, top: list[dict[str, Any]], settings: SearchSettings, say: Notify,
                on_event: Listener | None) -> list[dict[str, Any]]:
    """Re-train the `top` rows with `settings.confirm_seeds` fresh seeds (one grid: RUN's experiment
    `confirm`, continued if interrupted); one dict per row: its scores by seed, their mean and std."""
    seeds = seed_list(settings.seed, settings.confirm_seeds)
    run = search_run(run_dir, settings, "confirm")
    say(f"confirming the top {len(top)} configs with seeds {seeds} ({len(top) * len(seeds)} runs)")
    marker = run_dir / "ray" / "confirm.json"
    plan = json.dumps({"seeds": seeds, "trials": [row["trial_id"] for row in top]})
    if is_dir(run.path) and (not marker.is_file() or marker.read_text() != plan):
        remove_tree(run.path)  # a different confirmation than the one stored: start it over
    atomic_write_text(marker, plan)
    points = fit_grid(settings.trial(), {row["trial_id"]: row["params"] for row in top}, seeds, run,
                      restore=True, say=say, on_event=on_event)
    out = []
    for row in top:
        scores = [p.score for p in points if p.label == row["trial_id"]]
        m, sd = mean_std(scores)
        out.append({"trial_id": row["trial_id"], "number": row["number"], "search_r": row["mean_pearson"],
                    "params": row["params"], "seeds": seeds, "scores": scores, "mean": m, "std": sd})
    return out


def chosen(confirm: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The confirmed row with the best mean over seeds."""
    sign = 1 if mode == "max" else -1
    return max(confirm, key=lambda c: sign * c["mean"] if c["mean"] is not None else -math.inf)
