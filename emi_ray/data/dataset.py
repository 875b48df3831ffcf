"""A torch map-style Dataset over one split of the feature store.

Only the requested split's rows and modality columns are read. They stay in Arrow's
columnar buffers (one flat float32 array + offsets per shard), and an item is a zero-copy
numpy view reshaped to (T, D): thousands of videos are never turned into Python lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emi_ray import EMOTIONS
from emi_ray.data.store import SEQUENCE_MODALITIES, FeatureStore
from emi_ray.errors import StoreError


def pool_time(x: np.ndarray, max_len: int) -> np.ndarray:
    """Average-pool a (T, D) sequence by time into max_len equal segments when T > max_len."""
    t = x.shape[0]
    if t <= max_len:
        return x
    starts = (np.arange(max_len) * t) // max_len
    sums = np.add.reduceat(x, starts, axis=0)
    counts = np.diff(np.append(starts, t))[:, None]
    return (sums / counts).astype(np.float32)


class _Column:
    """One list<float32> column of a table, as per-chunk flat arrays + offsets."""

    def __init__(self, chunked, dim: int):
        self.dim = dim
        self.values, self.offsets, self.valid = [], [], []
        for chunk in chunked.chunks:
            self.values.append(chunk.values.to_numpy(zero_copy_only=False))
            self.offsets.append(chunk.offsets.to_numpy())
            self.valid.append(~chunk.is_null().to_numpy(zero_copy_only=False))
        starts = np.cumsum([0] + [len(o) - 1 for o in self.offsets])
        self.chunk_starts = starts

    def get(self, i: int) -> np.ndarray | None:
        c = int(np.searchsorted(self.chunk_starts, i, side="right") - 1)
        j = i - self.chunk_starts[c]
        if not self.valid[c][j]:
            return None
        o = self.offsets[c]
        return self.values[c][o[j] : o[j + 1]].reshape(-1, self.dim)


class FeatureDataset:
    """Items: {"id", "labels" (6,) (NaN on test), modality -> (T, D) or (D,) or None}."""

    def __init__(self, store: FeatureStore | str, split: str | list[str], modalities: list[str],
                 max_len: int = 256, ids: list[int] | None = None):
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        missing = [m for m in modalities if m not in self.store.modalities]
        if missing:
            raise StoreError(
                f"{self.store.root}: store has no {missing} features "
                f"(it has {self.store.modalities}); drop them from model.modalities"
            )
        self.modalities = list(modalities)
        self.max_len = max_len
        splits = [split] if isinstance(split, str) else list(split)
        # Shard by shard, no sort or filter copies: rows are addressed through `self._rows`.
        table = self.store.read(["id", "labels", *self.modalities], splits)
        all_ids = table.column("id").to_numpy()
        rows = np.argsort(all_ids, kind="stable")
        if ids is not None:
            rows = rows[np.isin(all_ids[rows], np.asarray(ids, np.int64))]
        self._rows = rows
        self.ids = all_ids[rows]
        lab = table.column("labels")
        flat = np.full((table.num_rows, len(EMOTIONS)), np.nan, np.float32)
        start = 0
        for chunk in lab.chunks:
            n = len(chunk)
            valid = ~chunk.is_null().to_numpy(zero_copy_only=False)
            vals = chunk.values.to_numpy(zero_copy_only=False).reshape(-1, len(EMOTIONS))
            vals = vals[chunk.offset : chunk.offset + n]
            flat[start : start + n][valid] = vals[valid]
            start += n
        self.labels = flat[rows]
        dims = self.store.dims()
        self.dims = {m: dims[m] for m in self.modalities}
        self._cols = {m: _Column(table.column(m), dims[m]) for m in self.modalities}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": int(self.ids[i]), "labels": self.labels[i]}
        row = int(self._rows[i])
        for m, col in self._cols.items():
            x = col.get(row)
            if x is not None and m in SEQUENCE_MODALITIES:
                x = pool_time(x, self.max_len)
            elif x is not None:
                x = x[0]
            item[m] = x
        return item
