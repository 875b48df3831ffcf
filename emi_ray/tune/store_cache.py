"""A per-process cache of the feature store for search trials (`reuse_actors=True`).

One Tune actor runs many trials. Reading the train and valid shards and pooling long
sequences again for each trial costs seconds (minutes on the real dataset), so this
store keeps, per shard and column, what `FeatureDataset` would build: sequence columns
already pooled by time to the trial's `data.max_len`. Memory stays what one trial's
datasets hold (pooled data), not the raw shards. Reads still go split by split through
`FeatureStore.shards_of`, so a search never opens a test shard.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emi_ray.data.dataset import pool_time
from emi_ray.data.store import SEQUENCE_MODALITIES, FeatureStore
from emi_ray.io import join, list_files, resolved

_STORES: dict[str, CachedStore] = {}


class CachedStore(FeatureStore):
    def __init__(self, root: str | Path):
        super().__init__(root)
        self.max_len: int | None = None  # the trial's data.max_len: pool sequences to it before caching
        self._cols: dict[tuple, Any] = {}

    def __str__(self) -> str:  # error messages name the store's path
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    def iter_tables(self, columns: list[str], split: str | list[str] | None = None):
        dims = self.dims()
        for p in self.shards_of(split):
            path = f"{self._base}/shards/{posixpath.basename(str(p))}"  # in self._fs (local disk or S3)
            stamp = self._fs.get_file_info(path).mtime_ns
            keys = {c: (str(p), stamp, c, self.max_len if c in SEQUENCE_MODALITIES else None) for c in columns}
            missing = [c for c in columns if keys[c] not in self._cols]
            if missing:
                t = pq.read_table(path, columns=missing, filesystem=self._fs, use_threads=False, pre_buffer=False)
                for c in missing:
                    col = t.column(c).combine_chunks()
                    if c in SEQUENCE_MODALITIES and self.max_len:
                        col = pooled(col, dims[c], self.max_len)
                    self._cols[keys[c]] = col
            yield pa.table({c: self._cols[keys[c]] for c in columns})


def pooled(arr: pa.ListArray, dim: int, max_len: int) -> pa.ListArray:
    """A list<float32> column of flattened (T, dim) sequences with T pooled to <= max_len."""
    offsets = arr.offsets.to_numpy()
    if not (np.diff(offsets) > max_len * dim).any():
        return arr
    values = arr.values.to_numpy(zero_copy_only=False)
    valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    parts, new = [], [0]
    for j in range(len(arr)):
        x = values[offsets[j] : offsets[j + 1]]
        if len(x) > max_len * dim:
            x = pool_time(x.reshape(-1, dim), max_len).ravel()
        parts.append(x)
        new.append(new[-1] + len(x))
    flat = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.empty(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(np.asarray(new, np.int32)), pa.array(flat), mask=pa.array(~valid))


def cached_store(features: str | Path, max_len: int | None = None) -> CachedStore:
    """This process's cached store for `features` (one at a time: a new store replaces the old)."""
    key = str(resolved(features))
    store = _STORES.get(key)
    if store is None or list_files(join(store.root, "shards"), "*-*.parquet") != store.shards:
        _STORES.clear()
        store = _STORES[key] = CachedStore(key)
    store.max_len = max_len
    return store
