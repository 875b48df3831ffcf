"""Ensembles, as challenge entries are made: average the predictions of several runs.

A run directory with `ensemble.json` (written by `emi-ray train --seeds N` and `--folds K`)
stands for its members; `emi-ray predict RUN1 RUN2 ...` averages any finished runs (train or
baseline runs, or ensembles of them). Members must have been trained on the same feature
store: averaging models of different inputs is refused.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.data.store import FeatureStore
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, load_yaml
from emi_ray.metrics import mean_pearson
from emi_ray.train.predict import predict_split, submission_csv

ENSEMBLE_FILE = "ensemble.json"


def write_ensemble(run_dir: Path, members: list[str], kind: str) -> None:
    """Record `members` (directory names inside run_dir) as the ensemble this run stands for."""
    atomic_write_text(run_dir / ENSEMBLE_FILE, json.dumps({"kind": kind, "members": members}, indent=2))


def member_runs(runs: list[str | Path]) -> list[Path]:
    """The single-model runs behind `runs`, ensembles expanded (in order, without repeats)."""
    found: list[Path] = []
    for run in runs:
        run = Path(run)
        spec = run / ENSEMBLE_FILE
        if spec.is_file():
            inner = [run / m for m in json.loads(spec.read_text())["members"]]
            missing = [str(p) for p in inner if not _finished(p)]
            if missing:
                raise EmiError(f"{run}: ensemble members not finished: {', '.join(missing)} "
                               f"(re-run the command with --resume)")
            found += member_runs(inner)
        elif _finished(run):
            found.append(run)
        else:
            raise EmiError(f"{run}: not a finished run (no best.pt, baseline.npz or {ENSEMBLE_FILE})")
    return list(dict.fromkeys(found))


def _finished(run: Path) -> bool:
    return (run / "best.pt").is_file() or (run / "baseline.npz").is_file() or (run / ENSEMBLE_FILE).is_file()


def trained_on(run: Path) -> str:
    """The feature store a run was trained on, as its config.yaml records it."""
    cfg = load_yaml((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    cfg = cfg or {}
    return str(cfg.get("features") or (cfg.get("data") or {}).get("features") or "")


def check_same_store(members: list[Path]) -> None:
    stores = {m: trained_on(m) for m in members}
    distinct = sorted(set(stores.values()))
    if len(distinct) > 1:
        first = members[0]
        other = next(m for m in members if stores[m] != stores[first])
        raise EmiError(f"cannot ensemble runs over different feature stores: {first} used {stores[first]}, "
                       f"{other} used {stores[other]}")


def predict_members(runs: list[str | Path], features: str | Path | None = None,
                    split: str = "test") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(ids, mean prediction (N, 6) clipped to [0, 1], {member: its prediction})."""
    members = member_runs(runs)
    check_same_store(members)
    ids, preds = None, {}
    for m in members:
        m_ids, pred = predict_split(m, features, split)
        if ids is not None and not np.array_equal(ids, m_ids):
            raise EmiError(f"{m}: predicts other videos than {members[0]} on split {split!r}")
        ids, preds[str(m)] = m_ids, pred
    mean = np.clip(np.mean(list(preds.values()), axis=0), 0.0, 1.0)
    return ids, mean, preds


def evaluate_members(runs: list[str | Path], features: str | Path | None = None,
                     split: str = "valid") -> dict[str, Any]:
    """The ensemble's score on a labelled split and each member's."""
    ids, mean, preds = predict_members(runs, features, split)
    store = features or trained_on(member_runs(runs)[0])
    lab_ids, labels = FeatureStore(store).labels(split)
    if not np.array_equal(ids, lab_ids):
        raise EmiError(f"split {split!r}: prediction ids and label ids differ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        members = {m: mean_pearson(p, labels)["mean_pearson"] for m, p in preds.items()}
        result = mean_pearson(mean, labels)
    scores = np.array(list(members.values()))
    return {**result, "videos": len(ids), "split": split, "members": members,
            "member_mean": float(scores.mean()), "member_std": float(scores.std()),
            "best_member": float(scores.max())}


def write_predictions(runs: list[str | Path], out: str | Path, features: str | Path | None = None,
                      split: str = "test") -> int:
    """Predictions of one run, or the average of several (ensembles expanded), as a submission CSV."""
    ids, pred, _ = predict_members(runs, features, split)
    atomic_write_text(out, submission_csv(ids, pred))
    return len(ids)
