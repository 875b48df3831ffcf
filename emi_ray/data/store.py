"""The feature store: Parquet shards plus a manifest, the seam between extraction and training.

```
FEATURES/
  manifest.json        modalities {name: {encoder, dim, rate_hz}}, packages, command, source
  shards/{split}-*.parquet one row per video (schema below), one split per shard, so a
                       reader of train/valid never opens test data; written atomically
  errors.csv           id, stage, file, message for every input that failed
```
Row schema: `id` int64, `split` string, `labels` fixed_size_list<float32, 6> (null on
test); per sequence modality m: `m` list<float32> holding the (T, D) sequence flattened
(null when the video lacks it) and `m_len` int32 = T (0 when missing; D is in the
manifest); text: `text` list<float32> of length D (null when missing).

FEATURES may be a URI that pyarrow's filesystems open, e.g. `s3://bucket/features`
(credentials, region and AWS_ENDPOINT_URL from the standard AWS environment): shards and
the manifest are then objects, each written in one PUT (all or nothing, like the local
temp-file-and-rename).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emi_ray import EMOTIONS, MODALITIES
from emi_ray.errors import StoreError
from emi_ray.io import (
    atomic_output,
    atomic_write_text,
    exists,
    filesystem,
    join,
    list_files,
    location,
    read_bytes,
    remove_file,
)

MANIFEST = "manifest.json"
ERRORS = "errors.csv"
SEQUENCE_MODALITIES = ("video", "audio")
ROWS_PER_SHARD = 256
ROW_GROUP = 32


def schema(modalities: Iterable[str]) -> pa.Schema:
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.float32(), len(EMOTIONS))),
    ]
    for m in modalities:
        fields.append(pa.field(m, pa.list_(pa.float32())))
        if m in SEQUENCE_MODALITIES:
            fields.append(pa.field(f"{m}_len", pa.int32(), nullable=False))
    return pa.schema(fields)


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("emi-ray", "numpy", "pyarrow", "torch", "ray", "av", "transformers", "open_clip_torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


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
        atomic_write_text(path, json.dumps(manifest, indent=2))

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
        index = len(self._shards(split))
        with atomic_output(join(self.root, "shards", f"{split}-{index:05d}.parquet")) as (fs, path):
            # Small row groups keep a reader's transient decode buffers small.
            pq.write_table(table, path, filesystem=fs, compression="none", row_group_size=ROW_GROUP)

    def write_errors(self, errors: list[dict[str, str]]) -> None:
        """Replace errors.csv with this run's failures (earlier failures were retried)."""
        path = join(self.root, ERRORS)
        if not errors:
            remove_file(path)
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["id", "stage", "file", "message"])
        w.writeheader()
        w.writerows(errors)
        atomic_write_text(path, buf.getvalue())

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


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = join(root, MANIFEST)
    try:
        found = exists(path)
    except OSError as e:  # e.g. no credentials or no such bucket
        raise StoreError(f"{root}: cannot read the feature store ({e})") from None
    if not found:
        raise StoreError(f"{location(root)}: not a feature store (no {MANIFEST}); run `emi-ray extract` first")
    try:
        return json.loads(read_bytes(path))
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: corrupt manifest ({e})") from None


class FeatureStore:
    """Read side of the store. Reads columns and splits lazily, never whole rows as objects."""

    def __init__(self, root: str | Path):
        self.root = location(root)  # a local Path, or a URI such as s3://bucket/features
        self.manifest = read_manifest(self.root)
        self.shards = list_files(join(self.root, "shards"), "*-*.parquet")
        self._fs, self._base = filesystem(self.root)

    def shards_of(self, split: str | list[str] | None) -> list[str | Path]:
        splits = [split] if isinstance(split, str) else split
        return [p for p in self.shards if splits is None or posixpath.basename(str(p)).split("-")[0] in splits]

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.manifest["modalities"]]

    def dims(self) -> dict[str, int]:
        return {m: int(v["dim"]) for m, v in self.manifest["modalities"].items()}

    def read(self, columns: list[str], split: str | list[str] | None = None) -> pa.Table:
        """The given columns of one or more splits; one chunk per shard (no copies)."""
        tables = list(self.iter_tables(columns, split))
        if not tables:
            return schema(self.modalities).empty_table().select(columns)
        return pa.concat_tables(tables)

    def iter_tables(self, columns: list[str], split: str | list[str] | None = None):
        """One table per shard file of the split(s); only those files are opened."""
        for p in self.shards_of(split):
            # No threads or pre-buffering: they multiply the transient memory of a read.
            yield pq.read_table(f"{self._base}/shards/{posixpath.basename(str(p))}", columns=columns,
                                filesystem=self._fs, use_threads=False, pre_buffer=False)

    def ids(self, split: str | None = None) -> list[int]:
        return self.read(["id"], split).column("id").to_pylist()

    def labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, labels (N, 6)) of a labelled split, in id order."""
        t = self.read(["id", "labels"], split).sort_by("id")
        lab = t.column("labels").combine_chunks()
        if lab.null_count:
            raise StoreError(f"{self.root}: split {split!r} has rows without labels")
        return t.column("id").to_numpy(), lab.values.to_numpy().reshape(-1, len(EMOTIONS))

    def errors(self) -> list[dict[str, str]]:
        path = join(self.root, ERRORS)
        if not exists(path):
            return []
        return list(csv.DictReader(io.StringIO(read_bytes(path).decode(), newline="")))

    def info(self) -> dict[str, Any]:
        """Counts per split, dims and length distribution per sequence modality."""
        len_cols = [f"{m}_len" for m in self.modalities if m in SEQUENCE_MODALITIES]
        t = self.read(["split", *len_cols])
        splits = t.column("split").to_numpy(zero_copy_only=False) if t.num_rows else np.array([])
        out: dict[str, Any] = {
            "path": str(self.root),
            "splits": {s: int((splits == s).sum()) for s in ("train", "valid", "test")},
            "modalities": {},
            "errors": len(self.errors()),
            "command": self.manifest.get("command", ""),
        }
        for m in self.modalities:
            entry = dict(self.manifest["modalities"][m])
            if m in SEQUENCE_MODALITIES and t.num_rows:
                lens = t.column(f"{m}_len").to_numpy()
                have = lens[lens > 0]
                entry["missing"] = int((lens == 0).sum())
                if have.size:
                    entry["length"] = {
                        "min": int(have.min()), "p50": float(np.median(have)),
                        "mean": float(have.mean()), "p95": float(np.percentile(have, 95)),
                        "max": int(have.max()),
                    }
            out["modalities"][m] = entry
        return out

