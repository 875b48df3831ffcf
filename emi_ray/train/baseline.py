"""The ridge baseline: the reference score every EMI paper quotes beside its own.

Features: per modality the mean over time of its sequence (text: its one vector),
concatenated, each column standardised with the training rows' mean and std; a modality a
video lacks is filled with the training mean (0 after standardising). Ridge regression
(`emi_ray.train.ridge`) with λ chosen by K-fold CV on the train split (criterion: mean
Pearson r over the six emotions on the held-out folds), refitted on all of train. Fitting
reads only the train split's shards (the valid split scores the result); the test shards
are opened only to predict them. Numpy only: seconds on a 1,200-clip store.

Run directory (`run_baseline`, `emi-ray baseline`):
  config.yaml    kind: baseline, features, modalities, folds, seed, alpha grid
  baseline.npz   the model (`BaselineModel.save`; loaded with allow_pickle=False)
  metrics.json   validation mean_pearson, per_emotion, alpha, cv_mean_pearson, kind: baseline
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from emi_ray import EMOTIONS
from emi_ray.data.dataset import label_matrix
from emi_ray.data.store import FeatureStore
from emi_ray.engine.provenance import write_provenance
from emi_ray.engine.rundir import new_run_dir
from emi_ray.errors import EmiError, StoreError
from emi_ray.io import atomic_path, atomic_write_text, filesystem, home, locked, read_yaml_mapping, resolved
from emi_ray.metrics import mean_pearson
from emi_ray.train.ridge import DEFAULT_ALPHAS, RidgePath, choose_alpha, cv_scores

MODEL_FILE = "baseline.npz"
Features = str | Path | FeatureStore


@dataclass
class SplitFeatures:
    ids: np.ndarray  # (N,) sorted
    x: np.ndarray  # (N, D) float64 mean-pooled features, NaN where the video lacks the modality
    labels: np.ndarray  # (N, 6) float32, NaN rows where unlabelled (test)


def _store(features: Features) -> FeatureStore:
    return features if isinstance(features, FeatureStore) else FeatureStore(features)


def resolve_modalities(store: FeatureStore, modalities: list[str] | None) -> list[str]:
    """The chosen modalities in the store's order (default: all it has); unknown ones are an error."""
    if modalities is None:
        return list(store.modalities)
    bad = [m for m in modalities if m not in store.modalities]
    if bad or not modalities:
        raise StoreError(f"{store.root}: store has no {bad or 'chosen'} features (it has "
                         f"{', '.join(store.modalities)}); choose --modalities from those")
    return [m for m in store.modalities if m in modalities]


def _mean_pool(chunk, dim: int, store: FeatureStore, m: str) -> np.ndarray:
    """(rows, dim) float64 time means of one list<float32> column; NaN rows where missing."""
    values = chunk.values.to_numpy(zero_copy_only=False)
    offsets = chunk.offsets.to_numpy().astype(np.int64)
    sizes = np.diff(offsets)
    if (sizes % dim).any():
        raise StoreError(f"{store.root}: {m} rows are not multiples of dim {dim}; re-run `emi-ray extract`")
    lengths = sizes // dim
    have = ~chunk.is_null().to_numpy(zero_copy_only=False) & (lengths > 0)
    out = np.full((len(chunk), dim), np.nan)
    if not have.any():
        return out
    if (sizes[~have] == 0).all():  # present rows are contiguous in the flat buffer: one reduceat
        flat = values[offsets[0] : offsets[-1]].reshape(-1, dim)
        sums = np.add.reduceat(flat, (offsets[:-1][have] - offsets[0]) // dim, axis=0, dtype=np.float64)
        out[have] = sums / lengths[have, None]
    else:
        for j in np.flatnonzero(have):
            out[j] = values[offsets[j] : offsets[j + 1]].reshape(-1, dim).mean(axis=0, dtype=np.float64)
    return out


def pooled_features(features: Features, split: str, modalities: list[str] | None = None) -> SplitFeatures:
    """Mean-pooled, concatenated features of one split, rows sorted by id (only its shards are read)."""
    store = _store(features)
    mods = resolve_modalities(store, modalities)
    dims = store.dims()
    ids, xs, labels = [], [], []
    try:
        for table in store.iter_tables(["id", "labels", *mods], split):
            ids.append(table.column("id").to_numpy())
            labels.append(label_matrix(table.column("labels").combine_chunks()))
            xs.append(np.hstack([_mean_pool(table.column(m).combine_chunks(), dims[m], store, m) for m in mods]))
    except (pa.ArrowException, OSError) as e:
        raise StoreError(f"{store.root}: cannot read the {split} shards ({str(e).splitlines()[0]}); "
                         f"re-run `emi-ray extract` into a new store") from None
    width = sum(dims[m] for m in mods)
    if not ids:
        return SplitFeatures(np.empty(0, np.int64), np.empty((0, width)), np.empty((0, len(EMOTIONS)), np.float32))
    all_ids = np.concatenate(ids)
    order = np.argsort(all_ids, kind="stable")
    return SplitFeatures(all_ids[order], np.vstack(xs)[order], np.concatenate(labels)[order])


def column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of the present (non-NaN) values; a constant or empty column gets std 1."""
    present = ~np.isnan(x)
    n = present.sum(axis=0)
    mean = np.where(n > 0, np.nansum(x, axis=0) / np.maximum(n, 1), 0.0)
    var = np.where(present, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n, 1)
    std = np.sqrt(var)
    # below rounding noise counts as constant: left unscaled instead of blown up
    return mean, np.where(std > 1e-10 * np.maximum(1.0, np.abs(mean)), std, 1.0)


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The design matrix: (x - mean) / std, a missing value (NaN) set to 0, i.e. the training mean."""
    return np.nan_to_num((x - mean) / std, nan=0.0)


@dataclass
class BaselineModel:
    modalities: list[str]
    dims: dict[str, int]
    mean: np.ndarray  # (D,) training column means
    std: np.ndarray  # (D,) training column stds (1 where constant)
    coef: np.ndarray  # (D, 6) on standardised columns
    intercept: np.ndarray  # (6,)
    alpha: float
    alphas: np.ndarray  # the λ grid
    cv_scores: np.ndarray  # CV mean r per λ of the grid
    train_videos: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, 6) unclipped predictions from a `pooled_features(...).x` matrix (NaN = missing)."""
        return standardise(x, self.mean, self.std) @ self.coef + self.intercept

    @property
    def cv_mean_pearson(self) -> float:
        return float(self.cv_scores[int(np.flatnonzero(self.alphas == self.alpha)[0])])

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, modalities=np.array(self.modalities, dtype=str),
                     dims=np.array([self.dims[m] for m in self.modalities], np.int64), mean=self.mean,
                     std=self.std, coef=self.coef, intercept=self.intercept, alpha=np.float64(self.alpha),
                     alphas=self.alphas, cv_scores=self.cv_scores, train_videos=np.int64(self.train_videos))

    @classmethod
    def load(cls, path: str | Path) -> BaselineModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                mods = [str(m) for m in z["modalities"]]
                return cls(mods, dict(zip(mods, (int(d) for d in z["dims"]))), z["mean"], z["std"], z["coef"],
                           z["intercept"], float(z["alpha"]), z["alphas"], z["cv_scores"], int(z["train_videos"]))
        except FileNotFoundError:
            raise EmiError(f"{path}: not found; is this an `emi-ray baseline` run directory?") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise EmiError(f"{path}: corrupt baseline model ({e}); re-run `emi-ray baseline`") from None


def fit_baseline(features: Features, modalities: list[str] | None = None, *, folds: int = 5, seed: int = 0,
                 alphas: list[float] | None = None) -> BaselineModel:
    """Ridge on the train split, λ by K-fold CV (mean Pearson r), refitted on all of train."""
    store = _store(features)
    mods = resolve_modalities(store, modalities)
    grid = np.array(sorted(float(a) for a in (DEFAULT_ALPHAS if alphas is None else alphas)))
    if folds < 2:
        raise EmiError(f"--folds {folds}: need at least 2 folds")
    if grid.size == 0 or (grid <= 0).any():
        raise EmiError(f"alphas {grid.tolist()}: need at least one penalty, all > 0")
    train = pooled_features(store, "train", mods)
    if len(train.ids) < folds:
        raise StoreError(f"{store.root}: {len(train.ids)} training clips, fewer than the {folds} CV folds; "
                         f"the baseline needs a store with a train split (or pass fewer --folds)")
    if np.isnan(train.labels).any():
        raise StoreError(f"{store.root}: split 'train' has rows without labels; re-run `emi-ray extract`")
    mean, std = column_stats(train.x)
    x = standardise(train.x, mean, std)
    # CV standardises with whole-train statistics rather than per fold: simpler, and the
    # held-out folds' share of a column mean/std barely moves the choice of λ.
    scores = cv_scores(x, train.labels, list(grid), folds, seed)
    alpha = choose_alpha(list(grid), scores)
    coef, intercept = RidgePath(x, train.labels).coef(alpha)
    dims = store.dims()
    return BaselineModel(mods, {m: dims[m] for m in mods}, mean, std, coef, intercept, alpha, grid, scores,
                         len(train.ids))


def validation_metrics(features: Features, model: BaselineModel) -> dict[str, Any]:
    """The model's scores on the valid split (clipped predictions, as `emi-ray predict` writes them)."""
    store = _store(features)
    valid = pooled_features(store, "valid", model.modalities)
    if len(valid.ids) == 0:
        raise StoreError(f"{store.root}: no valid split, so the baseline cannot be scored; "
                         f"extract a store from a dataset with valid_split.csv")
    if np.isnan(valid.labels).any():
        raise StoreError(f"{store.root}: split 'valid' has rows without labels")
    scores = mean_pearson(np.clip(model.predict(valid.x), 0.0, 1.0), valid.labels)
    return {"kind": "baseline", **scores, "alpha": model.alpha, "cv_mean_pearson": model.cv_mean_pearson,
            "modalities": model.modalities, "videos": len(valid.ids), "train_videos": model.train_videos,
            "cv": [{"alpha": float(a), "mean_pearson": float(s)} for a, s in zip(model.alphas, model.cv_scores)]}


def is_baseline_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MODEL_FILE).is_file()


def predict_baseline_split(run_dir: str | Path, features: str | Path | None = None,
                           split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(ids sorted, predictions (N, 6) clipped to [0, 1]) for one split; like `predict.predict_split`."""
    if not is_baseline_run(run_dir):
        raise EmiError(f"{run_dir}: not a baseline run (no {MODEL_FILE}); run `emi-ray baseline` first")
    model = BaselineModel.load(Path(run_dir) / MODEL_FILE)
    features = features or read_yaml_mapping(Path(run_dir) / "config.yaml", EmiError, "baseline config",
                                             "a mapping").get("features")
    store = FeatureStore(features)
    have = {m: d for m, d in store.dims().items() if m in model.dims}
    if have != model.dims:
        raise StoreError(f"{store.root}: has features {store.dims()}, the baseline {run_dir} needs {model.dims}")
    data = pooled_features(store, split, model.modalities)
    if len(data.ids) == 0:
        raise EmiError(f"{features}: split {split!r} has no videos")
    return data.ids, np.clip(model.predict(data.x), 0.0, 1.0)


def run_baseline(features: Features, run_dir: str | Path | None = None, modalities: list[str] | None = None, *,
                 folds: int = 5, seed: int = 0, alphas: list[float] | None = None) -> dict[str, Any]:
    """Fit, score on valid and write a run directory; returns metrics.json's contents + run_dir."""
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir("baseline")
    if run_dir.exists() and not (run_dir.is_dir() and not any(run_dir.iterdir())):
        raise EmiError(f"{run_dir}: run directory exists; choose a new --out")
    store = _store(features)
    model = fit_baseline(store, modalities, folds=folds, seed=seed, alphas=alphas)
    metrics = validation_metrics(store, model)
    config = {"kind": "baseline", "features": str(resolved(store.root)), "modalities": model.modalities,
              "folds": folds, "seed": seed, "alphas": [float(a) for a in model.alphas]}
    model.save(run_dir / MODEL_FILE)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_provenance(run_dir, "baseline", store.root)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))  # last: the run is complete
    return {**metrics, "run_dir": str(run_dir)}


def cache_key(store: FeatureStore, modalities: list[str]) -> str:
    """sha256 of the store's path, manifest, shard names/sizes/mtimes and the modalities."""
    fsys, _ = filesystem(store.root)
    infos = fsys.get_file_info([filesystem(p)[1] for p in store.shards])
    shards = [[posixpath.basename(str(p)), i.size, i.mtime_ns] for p, i in zip(store.shards, infos)]
    blob = json.dumps({"store": str(resolved(store.root)), "manifest": store.manifest, "shards": shards,
                       "modalities": sorted(modalities), "v": 1}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_baseline(features: Features, modalities: list[str] | None = None) -> dict[str, Any]:
    """Validation metrics of the default baseline, computed once per store (and modalities) and cached
    under EMI_RAY_HOME/cache/baseline/; what `emi-ray train` prints beside its own score."""
    store = _store(features)
    mods = resolve_modalities(store, modalities)
    path = home() / "cache" / "baseline" / f"{cache_key(store, mods)}.json"
    with locked(path.with_suffix(".lock")):
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # a damaged cache entry is recomputed
        metrics = validation_metrics(store, fit_baseline(store, mods))
        atomic_write_text(path, json.dumps(metrics))
    return metrics
