"""`emi-ray train --best`: the best config of a search, at full training budget."""

from __future__ import annotations

import json
from pathlib import Path

from emi_ray.config import Config, load_config
from emi_ray.errors import EmiError
from emi_ray.io import home
from emi_ray.tune.settings import SETTINGS_FILE, find_search


def latest_search(space: str | None) -> Path:
    """The run dir of the latest search of `space`, or of any space when None."""
    if space:
        return find_search(Path(space).stem if space.endswith((".yaml", ".yml")) else space, None)
    ptrs = sorted((home() / "searches").glob("*.latest"), key=lambda p: p.stat().st_mtime)
    if not ptrs:
        raise EmiError(f"no search found under {home() / 'searches'}; run `emi-ray tune --space fusion` first, "
                       f"or pass --from RUN")
    return find_search(ptrs[-1].name.removesuffix(".latest"), None)


def best_config(space: str | None, from_run: Path | None) -> tuple[Config, str]:
    """(config to train at full budget, where it came from).

    The config is the best trial's `best.yaml` (chosen by mean over seeds when the search
    ran --confirm-seeds), with train.epochs and train.patience restored to the values the
    search started from (a search trains each trial for max_epochs with patience 0).
    """
    if from_run is not None:
        p = Path(from_run).expanduser()
        if p.is_file() and p.suffix in (".yaml", ".yml"):  # a best.yaml itself
            p = p.parent
        run_dir = p.resolve()
        if not (run_dir / SETTINGS_FILE).is_file():
            raise EmiError(f"{run_dir}: not a search run directory (no {SETTINGS_FILE}); pass a directory written "
                           f"by `emi-ray tune`")
    else:
        run_dir = latest_search(space)
    best = run_dir / "best.yaml"
    if not best.is_file():
        raise EmiError(f"{run_dir}: no best.yaml yet (the search is running, was interrupted, or every trial "
                       f"failed); finish it with `emi-ray tune --resume --out {run_dir}`")
    cfg = load_config(best)
    settings = json.loads((run_dir / "search.json").read_text())
    cfg.train.epochs = int(settings.get("full_epochs", Config().train.epochs))
    cfg.train.patience = int(settings.get("full_patience", Config().train.patience))
    summary_path = run_dir / "summary.json"
    what = f"search {settings.get('space', '?')!r} ({run_dir})"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        b = s.get("best") or {}
        c = b.get("confirm")
        if c and c.get("mean") is not None:
            what += f", trial {b.get('number')}: mean r {c['mean']:.4f} over seeds {c['seeds']}"
        elif b.get("mean_pearson") is not None:
            what += f", trial {b.get('number')}: validation mean r {b['mean_pearson']:.4f}"
    what += f"; full budget train.epochs={cfg.train.epochs}, train.patience={cfg.train.patience}"
    return cfg, what
