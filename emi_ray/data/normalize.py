"""Input normalisation: per modality and dimension statistics of the training split only.

Real encoder features (CLIP, wav2vec2) have non-zero means, a few dimensions 10-100x
larger than the rest and per-person offsets; a model fed them raw lost to a ridge
regression on standardised features. Every stage-II run therefore standardises its
inputs with statistics of the rows it trains on — never valid or test rows — and saves
them with the model, so `predict`/`evaluate` apply exactly the same transform.

Modes (`data.normalize`):
  zscore  (x - mean) / std
  robust  (x - median) / (IQR / 1.349), then clipped to +-ROBUST_CLIP (outlier frames)
  whiten  zscore, then ZCA whitening z @ W, W = V diag(1 / sqrt(lambda + WHITEN_SHRINK)) V^T
          from the eigen-decomposition of the z-scored features' correlation matrix. Encoder
          features are anisotropic: a few directions (per-person offsets, recording conditions)
          hold most of the variance (BERT-whitening, Su et al. 2021, for sentence embeddings);
          a per-dimension scale leaves them dominant, whitening gives every direction unit
          variance. The shrinkage keeps near-empty directions from being blown up.
  none    raw features

Every clip counts once, whatever its length: mean = average of the clips' frame means,
std from the average of the clips' frame mean squares (a 2-minute clip does not outweigh
forty 3-second ones). Robust quantiles use up to ROBUST_ROWS frames spread evenly over
the clips. A constant dimension keeps scale 1 (it is only centred); a modality constant
in every dimension carries nothing and is an error.

The statistics are streamed shard by shard. `emi-ray info --stats` (and every new search,
before its trials) store them in FEATURES/stats/<mode>.json, valid while the train shards are
unchanged, so search trials read them instead of recomputing.
"""

from __future__ import annotations

import base64
import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.data.store import FeatureStore
from emi_ray.errors import StoreError
from emi_ray.io import atomic_write_text, exists, join, read_bytes

MODES = ("zscore", "robust", "whiten", "none")
WHITEN_SHRINK = 0.1  # added to every eigenvalue of the correlation matrix (mean eigenvalue: 1)
WHITEN_FRAMES = 16  # frames per clip (evenly spaced) that estimate the correlation matrix
ROBUST_CLIP = 5.0
ROBUST_ROWS = 32768
IQR_TO_STD = 1.349  # IQR of a standard normal
STATS_DIR = "stats"


@dataclass
class Normalization:
    """Per-modality (D,) shift and scale; `apply` maps flat (T*D,) or (T, D) float32 arrays."""

    mode: str
    mean: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    clip: float | None = None
    constant: dict[str, int] = field(default_factory=dict)  # constant dims per modality (scale kept 1)
    whiten: dict[str, np.ndarray] = field(default_factory=dict)  # (D, D) ZCA matrix per modality (whiten)
    clips: int = 0  # training clips the statistics came from
    train_shards: list[str] = field(default_factory=list)

    def apply(self, modality: str, x: np.ndarray) -> np.ndarray:
        if modality not in self.mean or x.size == 0:
            return x
        d = len(self.mean[modality])
        y = (x.reshape(-1, d) - self.mean[modality]) / self.scale[modality]
        if modality in self.whiten:
            y = y @ self.whiten[modality]
        if self.clip is not None:
            np.clip(y, -self.clip, self.clip, out=y)
        return y.astype(np.float32, copy=False).reshape(x.shape)

    def subset(self, modalities: list[str]) -> Normalization:
        keep = [m for m in modalities if m in self.mean]
        return Normalization(mode=self.mode, clip=self.clip, clips=self.clips, train_shards=self.train_shards,
                             mean={m: self.mean[m] for m in keep}, scale={m: self.scale[m] for m in keep},
                             constant={m: self.constant.get(m, 0) for m in keep},
                             whiten={m: self.whiten[m] for m in keep if m in self.whiten})

    def to_state(self) -> dict[str, Any]:
        """Plain Python values: safe for JSON and for torch.load(weights_only=True)."""
        return {"mode": self.mode, "clip": self.clip, "clips": self.clips, "constant": dict(self.constant),
                "train_shards": list(self.train_shards),
                "mean": {m: v.astype(float).tolist() for m, v in self.mean.items()},
                "scale": {m: v.astype(float).tolist() for m, v in self.scale.items()},
                "whiten": {m: _pack(w) for m, w in self.whiten.items()}}

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> Normalization:
        return cls(mode=st["mode"], clip=st.get("clip"), clips=int(st.get("clips", 0)),
                   constant={k: int(v) for k, v in st.get("constant", {}).items()},
                   train_shards=list(st.get("train_shards", [])),
                   mean={m: np.asarray(v, np.float32) for m, v in st["mean"].items()},
                   scale={m: np.asarray(v, np.float32) for m, v in st["scale"].items()},
                   whiten={m: _unpack(w) for m, w in st.get("whiten", {}).items()})


def _pack(a: np.ndarray) -> dict[str, Any]:
    """A float32 matrix as shape + base64 text: compact, JSON-safe and torch.load(weights_only)-safe."""
    return {"shape": list(a.shape), "float32_b64": base64.b64encode(np.ascontiguousarray(a, "<f4").tobytes()).decode()}


def _unpack(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["float32_b64"]), "<f4").reshape(d["shape"]).copy()


class _Moments:
    """Per-clip-weighted running sums for one modality: sum of clip means and mean squares."""

    def __init__(self, dim: int, sample_per_clip: int, outer: bool = False):
        self.dim, self.k = dim, sample_per_clip
        self.n = 0
        self.s1 = np.zeros(dim, np.float64)
        self.s2 = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64) if outer else None  # sum of clips' E[x x^T]
        self.samples: list[np.ndarray] = []

    def add(self, values: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> None:
        """One shard's column: flat float32 values, row offsets into them, rows to count."""
        for j in np.flatnonzero(valid & (np.diff(offsets) > 0)):
            x = values[offsets[j] : offsets[j + 1]].reshape(-1, self.dim).astype(np.float64)
            self.s1 += x.mean(0)
            self.s2 += (x * x).mean(0)
            if self.outer is not None:  # from WHITEN_FRAMES frames per clip: D^2 per frame adds up
                xs = _evenly(x, WHITEN_FRAMES)
                self.outer += xs.T @ xs / len(xs)
            self.n += 1
            if self.k:
                self.samples.append(_evenly(x, self.k))


def _evenly(x: np.ndarray, k: int) -> np.ndarray:
    """Up to k frames of a (T, D) clip, evenly spaced, as float32."""
    n = min(k, len(x))
    return x[(np.arange(n) * len(x)) // n].astype(np.float32)


def compute_stats(store: FeatureStore | str | Path, modalities: list[str], mode: str = "zscore",
                  split: str | list[str] = "train", ids: list[int] | None = None) -> Normalization | None:
    """Statistics of the rows of `split` (only those ids, if given); None for mode 'none'."""
    if mode not in MODES:
        raise StoreError(f"data.normalize={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return None
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    dims = store.dims()
    keep_ids = None if ids is None else np.asarray(ids, np.int64)
    per_clip = 0
    if mode == "robust":  # spread ROBUST_ROWS frames over the clips (only this mode needs the count)
        n_rows = len(keep_ids) if keep_ids is not None else len(store.ids(split))
        per_clip = max(1, ROBUST_ROWS // max(n_rows, 1))
    acc = {m: _Moments(dims[m], per_clip, outer=mode == "whiten") for m in modalities}
    shards = store.shards_of(split)
    for table in store.iter_tables(["id", *modalities], split):
        rows = None if keep_ids is None else np.isin(table.column("id").to_numpy(), keep_ids)
        for m, a in acc.items():
            col = table.column(m).combine_chunks()
            valid = ~col.is_null().to_numpy(zero_copy_only=False)
            if rows is not None:
                valid &= rows
            a.add(col.values.to_numpy(zero_copy_only=False), col.offsets.to_numpy(), valid)
    if not shards or all(a.n == 0 for a in acc.values()):
        raise StoreError(f"{store.root}: no training rows to compute normalisation statistics from "
                         f"(split {split!r} is empty); the store needs a train split")
    norm = Normalization(mode=mode, mean={}, scale={}, clip=ROBUST_CLIP if mode == "robust" else None,
                         clips=max(a.n for a in acc.values()),
                         train_shards=sorted(posixpath.basename(str(p)) for p in shards))
    for m, a in acc.items():
        if a.n == 0:
            continue  # the modality is missing from every training clip: nothing to learn from either way
        if mode in ("zscore", "whiten"):
            mean = a.s1 / a.n
            scale = np.sqrt(np.maximum(a.s2 / a.n - mean**2, 0.0))
        else:
            sample = np.concatenate(a.samples)
            q25, mean, q75 = np.quantile(sample, [0.25, 0.5, 0.75], axis=0)
            scale = (q75 - q25) / IQR_TO_STD
            spread = np.sqrt(np.maximum(a.s2 / a.n - (a.s1 / a.n) ** 2, 0.0))
            scale = np.where(scale > 0, scale, spread)  # a dimension mostly at one value: fall back to std
        const = scale <= 1e-6 * np.maximum(1.0, np.abs(mean))
        if const.all():
            raise StoreError(f"{store.root}: modality {m!r} has zero variance in all {len(scale)} dimensions "
                             f"on the training split; it carries no information — drop it from model.modalities")
        norm.mean[m] = mean.astype(np.float32)
        norm.scale[m] = np.where(const, 1.0, scale).astype(np.float32)
        norm.constant[m] = int(const.sum())
        if mode == "whiten":
            norm.whiten[m] = _zca(a, mean, norm.scale[m].astype(np.float64), const)
    return norm


def _zca(a: _Moments, mean: np.ndarray, scale: np.ndarray, const: np.ndarray) -> np.ndarray:
    """The ZCA matrix of the z-scored features from the clip-weighted second moments."""
    cov = a.outer / a.n - np.outer(mean, mean)
    corr = cov / np.outer(scale, scale)
    corr[const, :] = 0.0
    corr[:, const] = 0.0
    lam, vec = np.linalg.eigh((corr + corr.T) / 2)
    w = (vec / np.sqrt(np.maximum(lam, 0.0) + WHITEN_SHRINK)) @ vec.T
    return w.astype(np.float32)


def stats_path(store_root: str | Path, mode: str) -> str | Path:
    return join(store_root, STATS_DIR, f"{mode}.json")


def write_store_stats(store: FeatureStore | str | Path, mode: str = "zscore") -> Normalization | None:
    """Compute the train split's statistics of every modality and keep them in the store."""
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    norm = compute_stats(store, store.modalities, mode)
    if norm is not None:
        atomic_write_text(stats_path(store.root, mode), json.dumps(norm.to_state()))
    return norm


def ensure_store_stats(store: FeatureStore | str | Path, modes: tuple[str, ...] = ("zscore", "robust")) -> None:
    """Precompute what is missing or stale (a search does this once, before its trials). A store
    that cannot be written to is left alone: each trial process then computes the statistics once."""
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    for mode in modes:
        if mode != "none" and stored_stats(store, mode) is None:
            try:
                write_store_stats(store, mode)
            except OSError:
                return


def stored_stats(store: FeatureStore, mode: str) -> Normalization | None:
    """The store's precomputed statistics for `mode`, if present and made from today's train shards."""
    path = stats_path(store.root, mode)
    if not exists(path):
        return None
    try:
        norm = Normalization.from_state(json.loads(read_bytes(path)))
    except (ValueError, KeyError, TypeError):
        return None  # a stale or damaged cache is recomputed, not trusted
    current = sorted(posixpath.basename(str(p)) for p in store.shards_of("train"))
    return norm if norm.train_shards == current else None


_CACHE: dict[tuple, Normalization | None] = {}


def training_stats(features: str | Path | FeatureStore, modalities: list[str], mode: str,
                   split: str | list[str] = "train", ids: list[int] | None = None) -> Normalization | None:
    """The statistics a run trains with: the store's precomputed ones when the run trains on the whole
    train split, else computed from exactly its training rows (k-fold); cached per process (search trials)."""
    if mode == "none":
        return None
    # raw shards even for a search trial's cached store (it holds pooled sequences): trials and
    # `train --best` must see the same statistics
    store = FeatureStore(features.root if isinstance(features, FeatureStore) else features)
    key = (str(store.root), mode, tuple(modalities), str(split),
           None if ids is None else tuple(sorted(ids)), tuple(map(str, store.shards)))
    if key not in _CACHE:
        whole_train = ids is None and split in ("train", ["train"])
        stored = stored_stats(store, mode) if whole_train else None
        norm = stored.subset(modalities) if stored is not None else compute_stats(store, modalities, mode, split, ids)
        _CACHE.clear()  # one store at a time per process, like the search trials' store cache
        _CACHE[key] = norm
    return _CACHE[key]
