"""Load a trained run's best model; predict a split into the submission format; evaluate."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray import EMOTIONS
from emi_ray.config import Config
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text


def load_model(run_dir: str | Path):
    """(model in eval mode, Config) from RUN/best.pt, loaded with weights_only=True."""
    import torch

    from emi_ray.models import create_model

    path = Path(run_dir) / "best.pt"
    if not path.is_file():
        raise EmiError(f"{run_dir}: no best.pt (is this a finished `emi-ray train` run directory?)")
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = Config.from_dict(st["config"])
    model = create_model(cfg.model, st["dims"])
    model.load_state_dict(st["model"])
    return model.eval(), cfg


def latest_run() -> Path:
    """The newest finished train run under EMI_RAY_HOME/runs (the one whose best.pt is newest)."""
    from emi_ray.io import home

    found = sorted(home().glob("runs/*/best.pt"), key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise EmiError(f"no finished train run under {home() / 'runs'}; run `emi-ray train` first or pass RUN")
    return found[-1].parent


def predict_split(run_dir: str | Path, features: str | Path | None = None,
                  split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(ids sorted, predictions (N, 6) clipped to [0, 1]) for one split of a store."""
    from emi_ray.data.dataset import FeatureDataset
    from emi_ray.train.loop import predict_arrays

    from emi_ray.align.stage2 import stage2_features

    model, cfg = load_model(run_dir)
    features = features or cfg.data.features
    # a model trained on stage-I-aligned features predicts from features mapped the same way
    ds = FeatureDataset(stage2_features(cfg, features, (split,)), split, cfg.model.modalities, cfg.data.max_len)
    if len(ds) == 0:
        raise EmiError(f"{features}: split {split!r} has no videos")
    ids, pred = predict_arrays(model, ds)
    order = np.argsort(ids)
    return ids[order], np.clip(pred[order], 0.0, 1.0)


def submission_csv(ids: np.ndarray, pred: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Filename", *EMOTIONS])
    for i, row in zip(ids, pred):
        w.writerow([int(i), *(f"{v:.6f}" for v in row)])
    return buf.getvalue()


def write_predictions(run_dir: str | Path, out: str | Path, features: str | Path | None = None,
                      split: str = "test") -> int:
    ids, pred = predict_split(run_dir, features, split)
    atomic_write_text(out, submission_csv(ids, pred))
    return len(ids)


def evaluate_run(run_dir: str | Path, features: str | Path | None = None, split: str = "valid") -> dict[str, Any]:
    from emi_ray.data.store import FeatureStore
    from emi_ray.metrics import mean_pearson

    ids, pred = predict_split(run_dir, features, split)
    _, cfg = load_model(run_dir)
    lab_ids, labels = FeatureStore(features or cfg.data.features).labels(split)
    if not np.array_equal(ids, lab_ids):
        raise EmiError(f"split {split!r}: prediction ids and label ids differ")
    return {**mean_pearson(pred, labels), "videos": len(ids), "split": split}
