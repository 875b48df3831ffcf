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

import contextlib
import csv
import io
import json
import os
import posixpath
import re
import tempfile
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
    atomic_write_bytes,
    exists,
    filesystem,
    held_alone,
    is_dir,
    join,
    list_files,
    location,
    read_bytes,
    remove_file,
)

MANIFEST = "manifest.json"
ERRORS = "errors.csv"
LOCK = ".extract.lock"
_SHARD = re.compile(r"(?P<split>[a-z]+)-(?P<index>[0-9]+)\.parquet")
_SHARD_TEMP = re.compile(r"\.[a-z]+-.*\.tmp")  # what _write_shard's (and earlier versions') temp files look like
_ROOT_TEMP = re.compile(r"\.(manifest\.json|errors\.csv)\..*\.tmp")  # atomic_write_* temp files
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


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def durable_write_bytes(path: str | Path, data: bytes) -> None:
    """`atomic_write_bytes`, and locally fsynced before the rename replaces anything."""
    loc = location(path)
    if isinstance(loc, str):
        atomic_write_bytes(loc, data)
        return
    loc.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=loc.parent, prefix=f".{loc.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, loc)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(loc.parent)


def _ours(p: Path) -> bool:
    """A name an unfinished store of ours may hold before its manifest exists."""
    if p.name == LOCK or _ROOT_TEMP.fullmatch(p.name):
        return True
    if p.name == "shards" and p.is_dir() and not p.is_symlink():
        return all(_SHARD_TEMP.fullmatch(q.name) for q in p.iterdir())
    return False


def check_target(root: str | Path, force: bool = False) -> None:
    """Refuse to make `root` a store when it holds something else: a file; or a folder that is
    neither empty nor a store (no manifest.json) unless `force`; with `force`, still refuse one
    holding an errors.csv (extract would replace or delete it)."""
    loc = location(root)
    if isinstance(loc, str):  # an object store: any object under the prefix is "not empty"
        if exists(join(loc, MANIFEST)) or not is_dir(loc):
            return
        if not force:
            raise StoreError(f"{loc}: not a feature store (no {MANIFEST}) and not empty; choose a new --out, "
                             f"or pass --force to add a store there")
        if exists(join(loc, ERRORS)):
            raise StoreError(f"{join(loc, ERRORS)}: already there and not written by emi-ray extract; move it "
                             f"away or choose a new --out")
        return
    if loc.is_symlink() and not loc.exists():
        raise StoreError(f"{loc}: a broken symbolic link; choose a new --out")
    if loc.exists() and not loc.is_dir():
        raise StoreError(f"{loc}: exists and is not a directory; choose a new --out")
    if not loc.is_dir() or (loc / MANIFEST).exists():
        return
    try:
        other = sorted(p.name for p in loc.iterdir() if not _ours(p))
    except OSError as e:
        raise StoreError(f"{loc}: cannot list ({e.strerror})") from None
    if not other:
        return
    shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
    if not force:
        raise StoreError(f"{loc}: not a feature store (no {MANIFEST}) and not empty ({shown}); choose a new --out, "
                         f"or pass --force to add a store there (nothing in it is deleted)")
    if (loc / ERRORS).exists() or (loc / ERRORS).is_symlink():
        raise StoreError(f"{loc / ERRORS}: already there and not written by emi-ray extract; move it away or "
                         f"choose a new --out")


def store_lock(root: str | Path):
    """The store's writer lock for the block (a local store; an object store has none), or at
    once a StoreError naming who holds it (pid, host, start time)."""
    loc = location(root)
    if isinstance(loc, str):
        return contextlib.nullcontext()
    if loc.exists() and not loc.is_dir():
        raise StoreError(f"{loc}: exists and is not a directory; choose a new --out")
    return held_alone(loc / LOCK, f"the feature store {loc} (another `emi-ray extract` is writing it)", StoreError)


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

