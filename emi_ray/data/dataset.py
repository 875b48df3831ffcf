"""A torch map-style Dataset over one split of the feature store.

Only the requested splits' shard files and modality columns are read, one shard at a
time. Each column is kept as one flat float32 array + offsets per shard, with sequences
longer than `max_len` already pooled by time, and an item is a numpy view reshaped to
(T, D): thousands of videos are never turned into Python lists, and memory holds only
what training will use. With a `Normalization` (the run's training statistics) the values
are normalised as they are packed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from emi_ray import EMOTIONS
from emi_ray.data.normalize import Normalization
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


class _PackedColumn:
    """One list<float32> column as per-shard flat float32 arrays + offsets + validity."""

    def __init__(self, dim: int, max_len: int | None, normalize=None):
        self.dim, self.max_len = dim, max_len
        self.normalize = normalize  # callable on flat values (the run's input normalisation) or None
        self.values: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []

    def add_chunk(self, chunk) -> None:
        """Keep a shard's column; sequences longer than max_len are pooled now, so memory
        holds only what training uses (and the shard's Arrow buffers can be freed)."""
        values = chunk.values.to_numpy(zero_copy_only=False)
        offsets = chunk.offsets.to_numpy()
        valid = ~chunk.is_null().to_numpy(zero_copy_only=False)
        if self.max_len is not None and (np.diff(offsets) > self.max_len * self.dim).any():
            parts, new = [], [0]
            for j in range(len(chunk)):
                x = pool_time(values[offsets[j] : offsets[j + 1]].reshape(-1, self.dim), self.max_len)
                parts.append(x.ravel())
                new.append(new[-1] + x.size)
            values = np.concatenate(parts) if parts else np.empty(0, np.float32)
            offsets = np.asarray(new, np.int64)
        if self.normalize is not None:
            values = self.normalize(values)  # a new array: the shard's (maybe cached) buffers stay raw
        self.values.append(values)
        self.offsets.append(offsets)
        self.valid.append(valid)

    def finish(self) -> None:
        self.chunk_starts = np.cumsum([0] + [len(o) - 1 for o in self.offsets])

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
                 max_len: int = 256, ids: list[int] | None = None, normalization: Normalization | None = None):
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
        dims = self.store.dims()
        self.dims = {m: dims[m] for m in self.modalities}
        self.normalization = normalization
        self._cols = {m: _PackedColumn(dims[m], max_len if m in SEQUENCE_MODALITIES else None,
                                       None if normalization is None else functools.partial(normalization.apply, m))
                      for m in self.modalities}
        all_ids, labels = [], []
        # One shard at a time: peak memory = packed data + one shard.
        for table in self.store.iter_tables(["id", "labels", *self.modalities], splits):
            all_ids.append(table.column("id").to_numpy())
            labels.append(label_matrix(table.column("labels").combine_chunks()))
            for m, col in self._cols.items():
                col.add_chunk(table.column(m).combine_chunks())
        for col in self._cols.values():
            col.finish()
        all_id = np.concatenate(all_ids) if all_ids else np.empty(0, np.int64)
        rows = np.argsort(all_id, kind="stable")
        if ids is not None:
            rows = rows[np.isin(all_id[rows], np.asarray(ids, np.int64))]
        self._rows = rows
        self.ids = all_id[rows]
        self.labels = (np.concatenate(labels) if labels else np.empty((0, len(EMOTIONS)), np.float32))[rows]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": int(self.ids[i]), "labels": self.labels[i]}
        row = int(self._rows[i])
        for m, col in self._cols.items():
            x = col.get(row)
            if x is not None and m not in SEQUENCE_MODALITIES:
                x = x[0]
            item[m] = x
        return item


def label_matrix(arr) -> np.ndarray:
    """(N, 6) float32 from a fixed_size_list column; NaN rows where labels are null."""
    out = np.full((len(arr), len(EMOTIONS)), np.nan, np.float32)
    valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    vals = arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, len(EMOTIONS))
    if len(vals) == len(arr):
        out[valid] = vals[valid]
    else:  # flatten() dropped null rows
        out[valid] = vals
    return out
