"""Writing a feature store: rows buffered into Parquet shards, the manifest, errors.csv (the
layout and guarantees are in `store.py`'s docstring)."""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emi_ray import EMOTIONS
from emi_ray.data.store import (
    _SHARD,
    ROW_GROUP,
    ROWS_PER_SHARD,
    SEQUENCE_MODALITIES,
    FeatureStore,
    package_versions,
    read_manifest,
    schema,
)
from emi_ray.data.store_guard import (
    _ROOT_TEMP,
    _SHARD_TEMP,
    ERRORS,
    MANIFEST,
    _fsync_dir,
    _umask_mode,
    durable_write_bytes,
)
from emi_ray.errors import StoreError
from emi_ray.io import (
    atomic_output,
    exists,
    join,
    list_files,
    location,
    remove_file,
)


@dataclass
class Row:
    vid: int
    split: str
    labels: np.ndarray | None
    features: dict[str, np.ndarray]  # modality -> (T, D) for video/audio, (D,) for text


class StoreWriter:
    """Buffers rows and writes a shard every `rows_per_shard` rows (atomically)."""

    def __init__(self, root: str | Path, modalities: dict[str, dict[str, Any]], command: str = "",
                 source: str = "", rows_per_shard: int = ROWS_PER_SHARD):
        self.root = location(root)  # a local Path, or a URI such as s3://bucket/features
        self.modalities = modalities
        self.rows_per_shard = rows_per_shard
        self._rows: dict[str, list[Row]] = {}
        self._schema = schema(modalities)
        if isinstance(self.root, Path):
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
        manifest = {
            "version": 1,
            "modalities": modalities,
            "emotions": list(EMOTIONS),
            "command": command,
            "source": source,
            "packages": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        path = join(self.root, MANIFEST)
        if exists(path):
            old = read_manifest(self.root)
            if old["modalities"] != modalities:
                raise StoreError(
                    f"{path}: store was made with modalities {old['modalities']}, "
                    f"not {modalities}; use a new --out directory"
                )
            manifest["created"] = old.get("created", manifest["created"])
        durable_write_bytes(path, json.dumps(manifest, indent=2).encode())

    def clean_stale_temp(self) -> list[Path]:
        """Remove the temp files a killed writer of this store left (hidden `.*.tmp` names of
        ours in shards/ and beside the manifest); only while holding `store_lock`."""
        if not isinstance(self.root, Path):
            return []
        found = [p for p in (self.root / "shards").iterdir() if _SHARD_TEMP.fullmatch(p.name) and p.is_file()]
        found += [p for p in self.root.iterdir() if _ROOT_TEMP.fullmatch(p.name) and p.is_file()]
        for p in found:
            p.unlink(missing_ok=True)
        return found

    def done_ids(self) -> set[int]:
        return set(FeatureStore(self.root).ids()) if self._shards() else set()

    def _shards(self, split: str = "*") -> list[str | Path]:
        return list_files(join(self.root, "shards"), f"{split}-*.parquet")

    def add(self, row: Row) -> None:
        for m, x in row.features.items():
            want = self.modalities[m]["dim"]
            if x.shape[-1] != want:
                raise StoreError(f"id {row.vid}: {m} has dim {x.shape[-1]}, store expects {want}")
        rows = self._rows.setdefault(row.split, [])
        rows.append(row)
        if len(rows) >= self.rows_per_shard:
            self._write_shard(row.split)

    def flush(self) -> None:
        for split in list(self._rows):
            self._write_shard(split)

    def _write_shard(self, split: str) -> None:
        rows = self._rows.pop(split, [])
        if not rows:
            return
        cols: dict[str, list] = {"id": [], "split": [], "labels": []}
        for m in self.modalities:
            cols[m] = []
            if m in SEQUENCE_MODALITIES:
                cols[f"{m}_len"] = []
        for r in rows:
            cols["id"].append(r.vid)
            cols["split"].append(r.split)
            cols["labels"].append(None if r.labels is None else np.asarray(r.labels, np.float32))
            for m in self.modalities:
                x = r.features.get(m)
                cols[m].append(None if x is None else np.ascontiguousarray(x, np.float32).ravel())
                if m in SEQUENCE_MODALITIES:
                    cols[f"{m}_len"].append(0 if x is None else x.shape[0])
        arrays = [_to_arrow(cols[f.name], f.type) for f in self._schema]
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        if not isinstance(self.root, Path):  # an object store: one PUT under the next free name
            index = self._next_index(split)
            with atomic_output(join(self.root, "shards", f"{split}-{index:05d}.parquet")) as (fs, path):
                pq.write_table(table, path, filesystem=fs, compression="none", row_group_size=ROW_GROUP)
            return
        shards = self.root / "shards"
        fd, tmp = tempfile.mkstemp(dir=shards, prefix=f".{split}-", suffix=".parquet.tmp")
        os.close(fd)
        try:
            # Small row groups keep a reader's transient decode buffers small.
            pq.write_table(table, tmp, compression="none", row_group_size=ROW_GROUP)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # on disk before its name appears
            finally:
                os.close(fd)
            os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files
            index = self._next_index(split)
            while True:  # a hard link never replaces a file: a name taken meanwhile is skipped
                final = shards / f"{split}-{index:05d}.parquet"
                try:
                    os.link(tmp, final)
                    break
                except FileExistsError:
                    index += 1
                except OSError:  # no hard links on this filesystem: rename, if the name is still free
                    if final.exists():
                        index += 1
                        continue
                    os.rename(tmp, final)
                    break
            _fsync_dir(shards)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _next_index(self, split: str) -> int:
        """One past the highest shard number of `split` (a count could reuse a removed one's)."""
        found = [_SHARD.fullmatch(posixpath.basename(str(p))) for p in self._shards(split)]
        return max((int(m["index"]) + 1 for m in found if m), default=0)

    def write_errors(self, errors: list[dict[str, str]]) -> None:
        """Replace errors.csv with this run's failures (earlier failures were retried). Only
        extract calls this, after `check_target`: an errors.csv here is the store's own."""
        path = join(self.root, ERRORS)
        if not errors:
            remove_file(path)
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["id", "stage", "file", "message"], extrasaction="ignore")
        w.writeheader()
        w.writerows(errors)
        durable_write_bytes(path, buf.getvalue().encode())

    def close(self) -> None:
        self.flush()


def _to_arrow(values: list, typ: pa.DataType) -> pa.Array:
    if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ):
        # Build from one flat buffer + offsets: no per-element Python objects.
        mask = np.array([v is None for v in values])
        lengths = np.array([0 if v is None else len(v) for v in values], np.int32)
        flat = np.concatenate([v for v in values if v is not None]) if (~mask).any() else np.empty(0, np.float32)
        flat_arr = pa.array(flat.astype(np.float32, copy=False))
        if pa.types.is_fixed_size_list(typ):
            full = np.zeros((len(values), typ.list_size), np.float32)
            full[~mask] = flat.reshape(-1, typ.list_size)
            return pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), typ.list_size,
                                                     mask=pa.array(mask))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), flat_arr, mask=pa.array(mask))
    return pa.array(values, type=typ)
