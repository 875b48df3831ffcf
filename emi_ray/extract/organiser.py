"""`extract --preset organiser`: import the organisers' vit/wav2vec2 pickles and text transcripts.

Pickles go through the numpy-only unpickler. A file that fails for any reason (truncated,
wrong dims, wrong type, refused by the scan, out of memory) is recorded in errors.csv and
the import goes on. Without `skip_bad` the video is left out of the store, so a re-run
after fixing the file picks it up (finished ids are skipped); with `skip_bad` it is stored
with that modality missing (training masks it).

A modality's feature dim is the one most of its files agree on (ties: the lowest id's), from
the pickles' shapes before the import (unbuilt, and only until the majority is settled); a
store being resumed keeps its manifest's.
One bad file therefore never fixes the store's dim: fix it and re-run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emi_ray.data.layout import Dataset, read_layout
from emi_ray.data.pickles import array_shape, load_sequence
from emi_ray.data.store import MANIFEST, read_manifest
from emi_ray.data.store_guard import check_target, store_lock
from emi_ray.data.store_writer import Row, StoreWriter
from emi_ray.data.untrusted_files import max_bytes, read_capped
from emi_ray.errors import InputError, StoreError
from emi_ray.extract.encoders import create_encoder
from emi_ray.extract.rows import stage_error
from emi_ray.io import exists, join

# folder -> (modality, known frame rate in Hz or None)
ORGANISER_SOURCES = {"vit": ("video", None), "wav2vec2": ("audio", 50.0)}
IMPORTED = ("vit", "wav2vec2", "text")  # the folders this import reads


@dataclass
class ExtractSummary:
    store: Path
    done: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


def _probe_dim(ds: Dataset, folder: str) -> int:
    """The feature dim most readable files of a folder have (ties: the lowest id's)."""
    dims: Counter[int] = Counter()
    ids = sorted(ds.files[folder])
    for n, vid in enumerate(ids, start=1):
        try:
            shape, _ = array_shape(ds.files[folder][vid], ds.max_file_bytes, ds.root)
        except (InputError, MemoryError):  # that file fails again, with its reason, when imported
            continue
        if len(shape) in (1, 2) and shape[-1] > 0:
            dims[int(shape[-1])] += 1
            top = dims.most_common(2)
            if top[0][1] - (top[1][1] if len(top) > 1 else 0) > len(ids) - n:
                break  # the files left cannot change the answer
    if not dims:
        raise InputError(f"{ds.root / folder}: no readable .pkl file to learn the feature dim from")
    return dims.most_common(1)[0][0]


def _dims(ds: Dataset, folders: list[str], out) -> dict[str, int]:
    """folder -> feature dim: a resumed store's own (its manifest), else `_probe_dim`'s."""
    kept: dict = {}
    if exists(join(out, MANIFEST)):
        try:
            kept = read_manifest(out)["modalities"]
        except StoreError:
            kept = {}
    dims = {}
    for f in folders:
        entry = kept.get(ORGANISER_SOURCES[f][0])
        same = isinstance(entry, dict) and entry.get("encoder") == f"organiser-{f}"
        dims[f] = int(entry["dim"]) if same else _probe_dim(ds, f)
    return dims


def read_transcript(path: Path, limit: int | None = None, root: Path | None = None) -> str:
    """A UTF-8 transcript (a byte-order mark is dropped), at most `limit` bytes (None: the default)."""
    data = read_capped(path, max_bytes(None) if limit is None else limit, root=root, what="transcript")
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise InputError(f"{path}: transcript is not UTF-8 text") from None


def open_store(ds: Dataset, out: str | Path, modalities: dict, command: str,
               folders: tuple[str, ...]) -> tuple[StoreWriter, ExtractSummary, set[int]]:
    """The store's writer (stale temp files cleaned), a summary holding the scan's refusals in
    `folders` (files of ids not stored yet; an unnamed file counts as failed), the ids already stored."""
    writer = StoreWriter(out, modalities, command=command, source=str(ds.root))
    writer.clean_stale_temp()
    summary = ExtractSummary(store=Path(out))
    done = writer.done_ids()
    for p in ds.problems:  # files the scan refused (a symlink out, a FIFO, too big, a bad name)
        if p.folder in folders and (p.vid is None or p.vid not in done):
            summary.errors.append(p.error_row())
    summary.failed += sum(1 for p in ds.problems if p.vid is None and p.folder in folders)
    return writer, summary, done


def import_organiser(
    data_dir: str | Path,
    out: str | Path,
    text_encoder: str = "hash",
    text_model: str | None = None,
    skip_bad: bool = False,
    command: str = "",
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
    max_file_mb: float | None = None,
) -> ExtractSummary:
    """Import `data_dir`'s pickles and transcripts into the store `out` (resuming it). `force`:
    write into a folder that is not empty and not a store; `max_file_mb`: the per-file cap."""
    ds = read_layout(data_dir, max_file_mb=max_file_mb)
    folders = [f for f in ORGANISER_SOURCES if ds.files.get(f)]
    has_text = bool(ds.files.get("text"))
    if not folders and not has_text:
        refused = [p.message for p in ds.problems if p.folder in IMPORTED]
        raise InputError(f"{ds.root}: no vit/, wav2vec2/ or text/ files to import"
                         + (f" ({len(refused)} refused, e.g. {refused[0]})" if refused else ""))
    check_target(out, force)
    with store_lock(out):
        dims = _dims(ds, folders, out)
        enc = create_encoder(text_encoder, path=text_model) if has_text else None
        modalities: dict[str, dict] = {}
        for f in folders:
            modality, rate = ORGANISER_SOURCES[f]
            modalities[modality] = {"encoder": f"organiser-{f}", "dim": dims[f], "rate_hz": rate}
        if enc is not None:
            modalities["text"] = {"encoder": enc.name, "dim": int(enc.dim), "rate_hz": None}
        writer, summary, done = open_store(ds, out, modalities, command, IMPORTED)
        ids = [i for i in ds.ids() if ds.sources(i) or ds.problems_of(i, IMPORTED)]
        try:
            for n, vid in enumerate(ids, start=1):
                if vid in done:
                    summary.skipped += 1
                else:
                    _import_one(ds, vid, folders, enc, modalities, writer, summary, skip_bad)
                if progress:
                    progress(n, len(ids))
        finally:  # keep what finished, so a re-run resumes after a crash or Ctrl-C
            writer.close()
            writer.write_errors(summary.errors)
    return summary


def _import_one(ds, vid, folders, enc, modalities, writer, summary, skip_bad) -> None:
    feats: dict[str, np.ndarray] = {}
    failed = bool(ds.problems_of(vid, IMPORTED))  # already in errors.csv
    for f in folders:
        path = ds.path(f, vid)
        if path is None:
            continue
        modality = ORGANISER_SOURCES[f][0]
        try:
            feats[modality] = load_sequence(path, modalities[modality]["dim"], ds.max_file_bytes, ds.root)
        except Exception as e:  # noqa: BLE001 - MemoryError too: one bad file must not stop the import
            summary.errors.append({"id": str(vid), **stage_error("load", path, e)})
            failed = True
    tpath = ds.path("text", vid)
    if enc is not None and tpath is not None:
        try:
            feats["text"] = enc.encode([read_transcript(tpath, ds.max_file_bytes, ds.root)])[0]
        except Exception as e:  # noqa: BLE001
            summary.errors.append({"id": str(vid), **stage_error("text", tpath, e)})
            failed = True
    if failed:
        summary.failed += 1
        if not skip_bad:
            return
    if not feats:  # every file of this id failed: nothing to store
        return
    split = ds.split_of[vid]
    writer.add(Row(vid=vid, split=split, labels=ds.labels.get(vid), features=feats))
    summary.done += 1
