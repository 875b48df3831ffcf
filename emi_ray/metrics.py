"""The challenge metric: mean over the six emotions of Pearson's r across videos."""

from __future__ import annotations

import warnings

import numpy as np

from emi_ray import EMOTIONS


def pearson(pred: np.ndarray, target: np.ndarray) -> float:
    """Pearson r of two 1-D arrays; 0.0 (with a warning) when either has zero variance."""
    x = np.asarray(pred, np.float64)
    y = np.asarray(target, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson: expected two equal 1-D arrays, got {x.shape} and {y.shape}")
    if x.size < 2:
        warnings.warn("pearson: fewer than 2 videos; r set to 0", RuntimeWarning, stacklevel=2)
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    if denom == 0 or not np.isfinite(denom):
        return float("nan")  # the caller names the column in its warning
    return float(np.clip((xc @ yc) / denom, -1.0, 1.0))


def mean_pearson(pred: np.ndarray, target: np.ndarray) -> dict:
    """{"mean_pearson": r, "per_emotion": {emotion: r}} for (N, 6) arrays."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != len(EMOTIONS):
        raise ValueError(f"expected (N, 6) predictions and targets, got {pred.shape} and {target.shape}")
    per = {}
    for k, name in enumerate(EMOTIONS):
        r = pearson(pred[:, k], target[:, k])
        if np.isnan(r):
            which = "predictions" if np.ptp(pred[:, k]) == 0 else "labels"
            warnings.warn(f"{name}: {which} have zero variance; r set to 0", RuntimeWarning, stacklevel=2)
            r = 0.0
        per[name] = r
    return {"mean_pearson": float(np.mean(list(per.values()))), "per_emotion": per}
