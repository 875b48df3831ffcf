"""After a search: one row per trial, trials.csv, plots, importances, best.yaml, summary.json."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

from emi_ray.config import Config
from emi_ray.io import atomic_write_text
from emi_ray.plots import optimisation_history, param_importance
from emi_ray.tune.distributions import encode_choice
from emi_ray.tune.events import error_message
from emi_ray.tune.settings import SearchSettings, dashboard_command
from emi_ray.tune.spaces import SearchSpace
from emi_ray.tune.trial import TRIAL_DIR_PREFIX, split_config

STATUSES = ("complete", "stopped early", "failed", "unfinished", "no result")


@dataclass
class SearchResult:
    run_dir: Path
    space: str
    trials: list[dict[str, Any]]  # every trial (result_rows), in Optuna order
    top: list[dict[str, Any]]  # scored trials, best first
    best: dict[str, Any] | None  # the chosen trial (with confirmation stats if any)
    best_config: Config | None  # its resolved config (as searched: train.epochs = max_epochs)
    counts: dict[str, int]
    files: dict[str, Path]
    storage: Path
    dashboard_command: str
    ray_dashboard: str | None
    confirm: list[dict[str, Any]] | None = None
    importances: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    resumed: bool = False
    interrupted: bool = False  # stopped before every trial ended: --resume continues it
    ray_storage: str | None = None  # --storage: where the Tune experiments and the study's copy went


def _status(error, tune_status: str | None, epochs: int, max_epochs: int) -> str:
    if error is not None:
        return "failed"
    if tune_status in ("PENDING", "RUNNING", "PAUSED"):
        return "unfinished"
    if epochs == 0:
        return "no result"
    return "stopped early" if epochs < max_epochs else "complete"


def result_rows(rg, max_epochs: int, numbers: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One dict per trial: id, Optuna number, status, best mean r, its epoch, epochs run, error, params."""
    rows = []
    trials = getattr(getattr(rg, "_experiment_analysis", None), "trials", None)  # same order as rg
    if trials is not None and len(trials) != len(rg):
        trials = None
    for i, r in enumerate(rg):
        tid = trials[i].trial_id if trials else Path(r.path).name.removeprefix(TRIAL_DIR_PREFIX)
        df = r.metrics_dataframe
        epochs, score, best_epoch = 0, None, None
        if df is not None and len(df) and "mean_pearson" in df:
            vals = df["mean_pearson"].astype(float)
            epochs = int(df["training_iteration"].max()) if "training_iteration" in df else len(df)
            if vals.notna().any():
                j = vals.idxmax()
                score = float(vals[j])
                best_epoch = int(df["epoch"][j]) if "epoch" in df else None
        status = _status(r.error, trials[i].status if trials else None, epochs, max_epochs)
        rows.append({
            "number": (numbers or {}).get(tid),
            "trial_id": tid,
            "status": status,
            "mean_pearson": score if status in ("complete", "stopped early") else None,
            "best_epoch": best_epoch,
            "epochs": epochs,
            "time_s": float(df["time_total_s"].max()) if df is not None and "time_total_s" in df else None,
            "error": error_message(r.error) if r.error is not None else "",
            "params": split_config(r.config)[1] if r.config else {},
            "config": r.config or {},
        })
    rows.sort(key=lambda x: (x["number"] is None, x["number"] if x["number"] is not None else 0, x["trial_id"]))
    return rows


def ranked(rows: list[dict[str, Any]], mode: str = "max") -> list[dict[str, Any]]:
    """The scored rows, best first: those that ran all epochs, then those ASHA stopped early, each by score.

    The order Optuna's study has (COMPLETE trials rank, PRUNED ones do not; TPE also puts them
    after the complete ones), so the first row is the study's best trial, the one optuna-dashboard
    shows and best.yaml keeps.
    """
    ok = [r for r in rows if r["mean_pearson"] is not None and math.isfinite(r["mean_pearson"])]
    sign = -1 if mode == "max" else 1
    return sorted(ok, key=lambda r: (r["status"] != "complete", sign * r["mean_pearson"]))


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {**{s: sum(r["status"] == s for r in rows) for s in STATUSES}, "total": len(rows)}


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = sorted({k for r in rows for k in r["params"]})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "trial_id", "status", "mean_pearson", "best_epoch", "epochs", "time_s", *keys, "error"])
    for r in rows:
        w.writerow([r["number"], r["trial_id"], r["status"],
                    "" if r["mean_pearson"] is None else f"{r['mean_pearson']:.6f}",
                    "" if r["best_epoch"] is None else r["best_epoch"], r["epochs"],
                    "" if r["time_s"] is None else f"{r['time_s']:.1f}",
                    *[r["params"].get(k, "") for k in keys], r["error"]])
    atomic_write_text(path, buf.getvalue())


def write_trial_files(run_dir: Path, rows: list[dict[str, Any]], space: SearchSpace,
                      settings: SearchSettings) -> tuple[dict[str, Path], dict[str, float]]:
    """trials.csv, history.png, importance.png; returns (the result files by name, the importances)."""
    files = {"trials_csv": run_dir / "trials.csv", "history_png": run_dir / "history.png",
             "importance_png": run_dir / "importance.png", "summary": run_dir / "summary.json"}
    write_trials_csv(rows, files["trials_csv"])
    optimisation_history(rows, files["history_png"], title=f"search {settings.space}: {len(rows)} trials")
    imp = importances(rows, space, seed=settings.seed)
    shared = "\n(the parameters every trial samples)" if space.conditions else ""
    param_importance(imp, files["importance_png"], title=f"search {settings.space}: parameter importance{shared}")
    return files, imp


def resolved_config(row: dict[str, Any], features: str) -> Config:
    spec, sampled = split_config(row["config"])
    cfg = spec.config(sampled)
    cfg.data.features = features
    if spec.stage1_root:  # the stage-I run the trial pretrained (or reused)
        from emi_ray.align.aligned_store import stage1_result_key  # the stage-I side only when searched

        cfg.stage1.run = str(Path(spec.stage1_root) / stage1_result_key(cfg, features))
    return cfg


def best_header(run_dir: Path, settings: SearchSettings, best: dict[str, Any]) -> list[str]:
    lines = [
        f"emi-ray tune: best config of search space {settings.space!r} ({run_dir})",
        f"trial {best['number']} ({best['trial_id']}): validation mean r {best['mean_pearson']:.4f} at epoch "
        f"{best['best_epoch'] + 1} of {best['epochs']} run (max {settings.max_epochs})",
    ]
    c = best.get("confirm")
    if c:
        lines.append(f"confirmed: top-{settings.top_k} re-trained with seeds {c['seeds']}; chosen by mean "
                     f"r {c['mean']:.4f} +- {c['std']:.4f}")
    lines.append(f"full budget: `emi-ray train --best --from {run_dir}` sets train.epochs="
                 f"{settings.full_epochs}, train.patience={settings.full_patience}")
    return lines


def write_best_yaml(cfg: Config, path: Path, header: list[str]) -> None:
    """best.yaml: the resolved config (load_config reads it) under a comment header."""
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write_text(path, text)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "config"}


def write_summary(res: SearchResult, settings: SearchSettings) -> None:
    """summary.json: counts, the best and top trials, the confirmation, importances, timings."""
    summary = {
        "space": settings.space, "run_dir": str(res.run_dir), "features": settings.features,
        "objective": settings.objective, "counts": res.counts, "elapsed_s": res.elapsed_s, "resumed": res.resumed, "interrupted": res.interrupted,
        "best": _public(res.best) if res.best else None,
        "top": [_public(r) for r in res.top[:10]], "confirm": res.confirm, "importances": res.importances,
        "full_budget": {"train.epochs": settings.full_epochs, "train.patience": settings.full_patience},
        "storage": str(res.storage), "dashboard_command": dashboard_command(res.storage),
        "ray_storage": settings.storage,
    }
    atomic_write_text(res.files["summary"], json.dumps(summary, indent=2, default=str))


def importances(rows: list[dict[str, Any]], space: SearchSpace, seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each parameter for the trials' best mean r (empty if too few trials).

    Optuna's fANOVA weighs the parameters every trial sampled: in a conditional space those are the
    unconditional ones (and any conditional one that happened to be sampled in every trial)."""
    ok = ranked(rows)
    dists = space.optuna_space()
    always = set(dists) - set(space.conditions)  # a row without one of these is not a trial of this space
    if len(ok) < 2 or len({r["mean_pearson"] for r in ok}) < 2:
        return {}
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize")
    for r in ok:
        params = {k: (encode_choice(v) if isinstance(v, list) else v) for k, v in r["params"].items() if k in dists}
        if not always <= set(params):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  value=r["mean_pearson"]))
    if len(study.trials) < 2:
        return {}
    try:
        return dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)))
    except (RuntimeError, ValueError):  # e.g. every parameter constant over the trials
        return {}
