"""`extract --preset organiser`: import the organisers' vit/wav2vec2 pickles and text transcripts.

Pickles go through the numpy-only unpickler. A file that fails (truncated, wrong dims,
wrong type) is recorded in errors.csv. Without `skip_bad` the video is left out of the
store, so a re-run after fixing the file picks it up (finished ids are skipped); with
`skip_bad` it is stored with that modality missing (training masks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emi_ray.data.layout import Dataset, read_layout
from emi_ray.data.pickles import load_sequence
from emi_ray.data.store import Row, StoreWriter
from emi_ray.errors import EmiError, InputError
from emi_ray.extract.encoders import create_encoder

# folder -> (modality, known frame rate in Hz or None)
ORGANISER_SOURCES = {"vit": ("video", None), "wav2vec2": ("audio", 50.0)}


@dataclass
class ExtractSummary:
    store: Path
    done: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


def _probe_dim(ds: Dataset, folder: str) -> int:
    """Feature dim from the first readable file of a folder (later files must match)."""
    for vid in sorted(ds.files[folder]):
        try:
            return int(load_sequence(ds.files[folder][vid]).shape[1])
        except InputError:
            continue
    raise InputError(f"{ds.root / folder}: no readable .pkl file to learn the feature dim from")


def read_transcript(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"{path}: transcript is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def import_organiser(
    data_dir: str | Path,
    out: str | Path,
    text_encoder: str = "hash",
    text_model: str | None = None,
    skip_bad: bool = False,
    command: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> ExtractSummary:
    ds = read_layout(data_dir)
    folders = [f for f in ORGANISER_SOURCES if ds.files.get(f)]
    has_text = bool(ds.files.get("text"))
    if not folders and not has_text:
        raise InputError(f"{ds.root}: no vit/, wav2vec2/ or text/ files to import")
    enc = create_encoder(text_encoder, path=text_model) if has_text else None
    modalities: dict[str, dict] = {}
    for f in folders:
        modality, rate = ORGANISER_SOURCES[f]
        modalities[modality] = {"encoder": f"organiser-{f}", "dim": _probe_dim(ds, f), "rate_hz": rate}
    if enc is not None:
        modalities["text"] = {"encoder": enc.name, "dim": int(enc.dim), "rate_hz": None}
    writer = StoreWriter(out, modalities, command=command, source=str(ds.root))
    summary = ExtractSummary(store=Path(out))
    done = writer.done_ids()
    ids = [i for i in ds.ids() if ds.sources(i)]
    for n, vid in enumerate(ids, start=1):
        if vid in done:
            summary.skipped += 1
        else:
            _import_one(ds, vid, folders, enc, modalities, writer, summary, skip_bad)
        if progress:
            progress(n, len(ids))
    writer.close()
    writer.write_errors(summary.errors)
    return summary


def _import_one(ds, vid, folders, enc, modalities, writer, summary, skip_bad) -> None:
    feats: dict[str, np.ndarray] = {}
    failed = False
    for f in folders:
        path = ds.path(f, vid)
        if path is None:
            continue
        modality = ORGANISER_SOURCES[f][0]
        try:
            feats[modality] = load_sequence(path, modalities[modality]["dim"])
        except EmiError as e:
            summary.errors.append({"id": str(vid), "stage": "load", "file": str(path), "message": str(e)})
            failed = True
    tpath = ds.path("text", vid)
    if enc is not None and tpath is not None:
        try:
            feats["text"] = enc.encode([read_transcript(tpath)])[0]
        except EmiError as e:
            summary.errors.append({"id": str(vid), "stage": "text", "file": str(tpath), "message": str(e)})
            failed = True
    if failed:
        summary.failed += 1
        if not skip_bad:
            return
    split = ds.split_of[vid]
    writer.add(Row(vid=vid, split=split, labels=ds.labels.get(vid), features=feats))
    summary.done += 1
