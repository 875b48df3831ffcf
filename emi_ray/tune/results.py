"""After a search: one row per trial, trials.csv, best.yaml, importance and history plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from emi_ray.config import Config
from emi_ray.io import atomic_write_text
from emi_ray.tune.trainable import RESERVED, trial_config

TRIAL_DIR_PREFIX = "trial_"


def trial_dirname(trial) -> str:
    """Tune trial directory name: the trial id, so rows can be matched to trials."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESERVED}


def result_rows(rg, max_epochs: int, numbers: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One dict per trial: id, Optuna number, status, best mean r, its epoch, epochs run, error, params."""
    from emi_ray.tune.searcher import error_message

    rows = []
    trials = getattr(getattr(rg, "_experiment_analysis", None), "trials", None)  # same order as rg
    if trials is not None and len(trials) != len(rg):
        trials = None
    for i, r in enumerate(rg):
        tid = trials[i].trial_id if trials else Path(r.path).name.removeprefix(TRIAL_DIR_PREFIX)
        tune_status = trials[i].status if trials else None
        df = r.metrics_dataframe
        epochs = 0
        score, best_epoch = None, None
        if df is not None and len(df) and "mean_pearson" in df:
            vals = df["mean_pearson"].astype(float)
            epochs = int(df["training_iteration"].max()) if "training_iteration" in df else len(df)
            if vals.notna().any():
                i = vals.idxmax()
                score = float(vals[i])
                best_epoch = int(df["epoch"][i]) if "epoch" in df else None
        if r.error is not None:
            status = "failed"
        elif tune_status in ("PENDING", "RUNNING", "PAUSED"):
            status = "unfinished"
        elif epochs == 0:
            status = "no result"
        elif epochs < max_epochs:
            status = "stopped early"
        else:
            status = "complete"
        rows.append({
            "number": (numbers or {}).get(tid),
            "trial_id": tid,
            "status": status,
            "mean_pearson": score if status in ("complete", "stopped early") else None,
            "best_epoch": best_epoch,
            "epochs": epochs,
            "time_s": float(df["time_total_s"].max()) if df is not None and "time_total_s" in df else None,
            "error": error_message(r.error) if r.error is not None else "",
            "params": trial_params(r.config or {}),
            "config": r.config or {},
        })
    rows.sort(key=lambda x: (x["number"] is None, x["number"] if x["number"] is not None else 0, x["trial_id"]))
    return rows


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = [r for r in rows if r["mean_pearson"] is not None and math.isfinite(r["mean_pearson"])]
    return sorted(ok, key=lambda r: -r["mean_pearson"])


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


def resolved_config(row: dict[str, Any], features: str) -> Config:
    cfg = trial_config(row["config"])
    cfg.data.features = features
    if row["config"].get("stage1_root"):  # the stage-I run the trial pretrained (or reused)
        from emi_ray.align.stage2 import stage1_result_key

        cfg.stage1.run = str(Path(row["config"]["stage1_root"]) / stage1_result_key(cfg, features))
    return cfg


def write_best_yaml(cfg: Config, path: Path, header: list[str]) -> None:
    """best.yaml: the resolved config (load_config reads it) under a comment header."""
    import yaml

    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write_text(path, text)


def importances(rows: list[dict[str, Any]], space, seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each parameter for the trials' best mean r (empty if too few trials)."""
    import optuna

    from emi_ray.tune.spaces import encode_choice

    ok = ranked(rows)
    dists = space.optuna_space()
    if len(ok) < 2 or len({r["mean_pearson"] for r in ok}) < 2:
        return {}
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize")
    for r in ok:
        params = {k: (encode_choice(v) if isinstance(v, list) else v) for k, v in r["params"].items() if k in dists}
        if set(params) != set(dists):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r["mean_pearson"]))
    if len(study.trials) < 2:
        return {}
    try:
        from optuna.importance import FanovaImportanceEvaluator, get_param_importances

        return dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)))
    except (RuntimeError, ValueError):  # e.g. every parameter constant over the trials
        return {}
