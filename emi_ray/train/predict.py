"""Load a trained run's best model; predict a split into the submission format; evaluate."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from emi_ray import EMOTIONS
from emi_ray.align.aligned_store import stage2_features
from emi_ray.config import Config
from emi_ray.data.dataset import FeatureDataset
from emi_ray.data.normalize import Normalization
from emi_ray.errors import EmiError
from emi_ray.io import home
from emi_ray.models import create_model
from emi_ray.train.baseline import is_baseline_run, predict_baseline_split
from emi_ray.train.loop import predict_arrays


def load_model(run_dir: str | Path):
    """(model in eval mode, Config, Normalization or None) from RUN/best.pt (weights_only=True)."""
    path = Path(run_dir) / "best.pt"
    if not path.is_file():
        raise EmiError(f"{run_dir}: no best.pt (is this a finished `emi-ray train` run directory?)")
    st = torch.load(path, map_location="cpu", weights_only=True)
    cfg = Config.from_dict(st["config"])
    model = create_model(cfg.model, st["dims"])
    model.load_state_dict(st["model"])
    norm = st.get("normalization")  # runs made before normalisation existed have none
    return model.eval(), cfg, None if norm is None else Normalization.from_state(norm)


def latest_run() -> Path:
    """The newest finished train run under EMI_RAY_HOME/runs: a single run (its best.pt) or a
    finished ensemble (--seeds, --folds: its metrics.json or cv.json), whichever is newest."""
    runs = home() / "runs"
    found = [*runs.glob("*/best.pt"), *(p for p in runs.glob("*/metrics.json") if (p.parent / "ensemble.json").is_file()),
             *runs.glob("*/cv.json")]
    if not found:
        raise EmiError(f"no finished train run under {runs}; run `emi-ray train` first or pass RUN")
    return max(found, key=lambda p: p.stat().st_mtime_ns).parent


def predict_split(run_dir: str | Path, features: str | Path | None = None,
                  split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(ids sorted, predictions (N, 6) clipped to [0, 1]) of one run (train or baseline) for one split."""
    if is_baseline_run(run_dir):
        return predict_baseline_split(run_dir, features, split)
    model, cfg, norm = load_model(run_dir)
    features = features or cfg.data.features
    # a model trained on stage-I-aligned features predicts from features mapped the same way,
    # normalised with the statistics of its own training rows
    ds = FeatureDataset(stage2_features(cfg, features, (split,)), split, cfg.model.modalities, cfg.data.max_len,
                        normalization=norm)
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
