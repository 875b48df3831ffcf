"""The feature store: Parquet shards plus a manifest, the seam between extraction and training.

```
FEATURES/
  manifest.json        modalities {name: {encoder, dim, rate_hz}}, packages, command, source
  shards/{split}-*.parquet one row per video (schema below), one split per shard, so a
                       reader of train/valid never opens test data; written atomically
  errors.csv           id, stage, file, message for every input that failed
  .extract.lock        held by the one `emi-ray extract` writing the store (pid, host, start)
```
Shards are written to a hidden temp file in `shards/`, fsynced, then hard-linked to the next
free `{split}-NNNNN.parquet` name (a link never replaces a file, so two writers cannot
overwrite each other's shards); the temp name goes away. `extract` writes a store only into
an empty folder, a store, or with `force` a folder of other files (`check_target`), holds
the lock while it writes (`store_lock`), and removes its own stale temp files on resume.
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
import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emi_ray import EMOTIONS, MODALITIES
from emi_ray.data.store_guard import ERRORS, MANIFEST  # noqa: F401 (MANIFEST, ERRORS: part of the store's API)
from emi_ray.errors import StoreError
from emi_ray.io import (
    exists,
    filesystem,
    join,
    list_files,
    location,
    read_bytes,
)

_SHARD = re.compile(r"(?P<split>[a-z]+)-(?P<index>[0-9]+)\.parquet")
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


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = join(root, MANIFEST)
    try:
        found = exists(path)
    except OSError as e:  # e.g. no credentials or no such bucket
        raise StoreError(f"{root}: cannot read the feature store ({e})") from None
    if not found:
        raise StoreError(f"{location(root)}: not a feature store (no {MANIFEST}); run `emi-ray extract` first")
    try:
        manifest = json.loads(read_bytes(path))
    except ValueError as e:  # not JSON, or not UTF-8
        raise StoreError(f"{path}: corrupt manifest ({str(e)[:200]})") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot read ({e})") from None
    mods = manifest.get("modalities") if isinstance(manifest, dict) else None
    if not isinstance(mods, dict) or not all(
            m in MODALITIES and isinstance(v, dict) and type(v.get("dim")) is int and v["dim"] > 0
            for m, v in mods.items()):
        raise StoreError(f"{path}: corrupt manifest (expected modalities {{name: {{encoder, dim, rate_hz}}}} "
                         f"with name in {list(MODALITIES)} and dim > 0)")
    return manifest


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
        try:
            return pa.concat_tables(tables)
        except pa.ArrowInvalid as e:
            raise StoreError(f"{self.root}: its shards do not share one schema ({' '.join(str(e).split())[:200]}); "
                             f"a shard from another store is in shards/") from None

    def iter_tables(self, columns: list[str], split: str | list[str] | None = None):
        """One table per shard file of the split(s); only those files are opened."""
        for p in self.shards_of(split):
            try:  # No threads or pre-buffering: they multiply the transient memory of a read.
                table = pq.read_table(f"{self._base}/shards/{posixpath.basename(str(p))}", columns=columns,
                                      filesystem=self._fs, use_threads=False, pre_buffer=False)
            except (pa.ArrowException, OSError) as e:
                why = " ".join(str(e).split())[:200]
                raise StoreError(f"{p}: not a readable Parquet shard of this store ({why}); move it out of "
                                 f"shards/ and re-run `emi-ray extract` to redo its rows") from None
            yield table

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
        text = read_bytes(path).decode("utf-8", errors="replace")
        try:
            return list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise StoreError(f"{path}: not a readable errors.csv ({e})") from None

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

