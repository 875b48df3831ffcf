"""The driver: raw media -> feature store, through the Ray Data graph (graph.py) or locally.

`run_extract` finds the ids not yet in the store, runs them through the decode and encode
stages, joins each clip's parts and writes one store row per clip. Failures never stop the
run: the stages catch errors per row and return them in an `error` column; they go to
errors.csv, and so do the files the dataset scan refused (layout.py: a symlink out of the
dataset, a FIFO, a file over the cap, a name that is not an id). A row with an error is left
out of the store (a re-run retries it), or with `skip_bad` stored with the modalities that
worked. The store is checked (`check_target`) and locked (`store_lock`) first. Whisper transcripts are written by the
driver to `transcripts/<id>.txt` (default: `<store>/text/`), never over a file it did not write (transcripts.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.data.layout import Dataset, read_layout
from emi_ray.data.store_writer import Row, StoreWriter
from emi_ray.data.store_guard import check_target, store_lock
from emi_ray.errors import InputError
from emi_ray.extract.decode_stage import decode_kwargs, decode_parts, work_items
from emi_ray.extract.encode_stage import EncodeBatch, blas_limits, encoded_groups, encoder_choices
from emi_ray.extract.organiser import ExtractSummary, open_store
from emi_ray.extract.presets import Plan, check_paths, modality_entries, video_input_size
from emi_ray.extract.rows import Parts
from emi_ray.extract.transcripts import TranscriptDir
from emi_ray.ray_env import init_ray

Progress = Callable[[int, int], None]


def iter_local(items: list[dict[str, Any]], plan: Plan, size: int | None,
               threads: int | None = None) -> Iterator[dict[str, Any]]:
    """The same decode and encode steps in this process, one batch at a time (no Ray):
    the sequential baseline of the benchmark, and handy for debugging an encoder.
    `threads`: codec/scaler threads per decode and numpy BLAS threads while it runs (None:
    ffmpeg's and BLAS's own choice)."""
    enc = EncodeBatch(encoder_choices(plan), threads=max(1, round(plan.encoder_cpus)), limit_threads=False)
    kw = decode_kwargs(plan, size, threads)
    with blas_limits(threads):
        for start in range(0, len(items), plan.batch_size):
            rows = (r for it in items[start : start + plan.batch_size] for r in decode_parts(it, **kw))
            for out in encoded_groups(rows, enc, plan.batch_size, kw["chunk_frames"]):
                for i in range(len(out["id"])):
                    yield {k: v[i] for k, v in out.items()}


def _rows(items: list[dict[str, Any]], plan: Plan, size: int | None, *, local: bool, local_threads: int | None,
          address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """The encoded rows (clip parts) of `items`: from the Ray Data graph, or `iter_local`."""
    if local:
        return iter_local(items, plan, size, local_threads)
    init_ray(address, num_cpus=num_cpus)
    # lazy, and after init_ray: importing ray.data reads the settings init_ray puts in the environment
    # (its progress bars off); local runs never import it
    from emi_ray.extract.graph import build_dataset

    return build_dataset(items, plan, size).iter_rows()


def run_extract(data_dir: str | Path, out: str | Path, plan: Plan, *, skip_bad: bool = False,
                address: str | None = None, num_cpus: int | None = None, command: str = "",
                transcripts: str | Path | None = None, progress: Progress | None = None,
                local: bool = False, local_threads: int | None = None, force: bool = False,
                max_file_mb: float | None = None) -> ExtractSummary:
    """Extract features of every not-yet-stored id of `data_dir` into the store `out`.

    `local=True` runs the same steps sequentially in this process, without Ray, decoding with
    `local_threads` codec/scaler threads (None: ffmpeg's choice). `force`: write into a folder
    that is not empty and not a store; `max_file_mb`: the per-file cap (read_layout)."""
    check_paths(plan)  # every missing model path in one message, before any work
    ds = read_layout(data_dir, max_file_mb=max_file_mb)
    with_text = plan.text is not None and (plan.transcriber is not None or bool(ds.files.get("text")))
    read = ("raw", "audio", *(("text",) if plan.text is not None and plan.transcriber is None else ()))
    ids = [i for i in ds.ids() if ds.path("raw", i) is not None or ds.path("audio", i) is not None]
    have = set(ids)
    refused = {i for i in ds.ids() if i not in have and ds.problems_of(i, ("raw", "audio"))}
    if not ids and not refused:
        raise InputError(f"{ds.root}: no raw/*.mp4 or audio/*.mp3 media to extract "
                         f"(for organiser vit/wav2vec2 pickles use --preset organiser)")
    modalities = modality_entries(plan, with_text)
    size = video_input_size(plan)
    check_target(out, force)
    with store_lock(out):
        return _extract(ds, out, plan, ids, refused, read, with_text, modalities, size, skip_bad=skip_bad,
                        address=address, num_cpus=num_cpus, command=command, transcripts=transcripts,
                        progress=progress, local=local, local_threads=local_threads)


def _extract(ds: Dataset, out: str | Path, plan: Plan, ids: list[int], refused: set[int], read: tuple[str, ...],
             with_text: bool, modalities: dict, size: int | None, *, skip_bad: bool, address: str | None,
             num_cpus: int | None, command: str, transcripts: str | Path | None, progress: Progress | None,
             local: bool, local_threads: int | None) -> ExtractSummary:
    """run_extract's work, under the store's lock."""
    writer, summary, done = open_store(ds, out, modalities, command, read)
    summary.failed += len(refused - done)  # ids whose media were all refused never reach the pipeline
    todo = [i for i in ids if i not in done]
    summary.skipped = len(ids) - len(todo)
    tdir = TranscriptDir(transcripts if transcripts else Path(out) / "text")
    if plan.transcriber is not None:
        tdir.check(todo)  # never overwrite a transcript the user put there
    try:
        if todo:
            items = work_items(ds, todo, with_text and plan.transcriber is None)
            rows = _rows(items, plan, size, local=local, local_threads=local_threads, address=address,
                         num_cpus=num_cpus)
            if progress:
                progress(0, len(todo))
            parts, n = Parts(), 0
            for part in rows:
                row = parts.add(part)
                if row is None:  # more parts of this clip to come
                    continue
                _store_row(row, ds, modalities, writer, summary, skip_bad, plan, tdir, read)
                n += 1
                if progress:
                    progress(n, len(todo))
    finally:  # keep what finished, so a re-run resumes after a crash or Ctrl-C
        writer.close()
        writer.write_errors(summary.errors)
    return summary


def _store_row(row: dict[str, Any], ds: Dataset, modalities: dict, writer: StoreWriter,
               summary: ExtractSummary, skip_bad: bool, plan: Plan, tdir: TranscriptDir,
               read: tuple[str, ...]) -> None:
    vid = int(row["id"])
    errors = json.loads(row["error"]) if row["error"] else []
    refused = bool(ds.problems_of(vid, read))  # a file of this id the scan refused: already in errors.csv
    if plan.transcriber is not None and row.get("has_transcript"):
        tdir.write(vid, str(row["transcript"]))
    feats: dict[str, np.ndarray] = {}
    for m in ("video", "audio"):
        if m in modalities and len(row[m]):
            feats[m] = np.asarray(row[m], np.float32)
    if "text" in modalities and row["has_text"]:
        feats["text"] = np.asarray(row["text"], np.float32)
    for e in errors:
        summary.errors.append({"id": str(vid), **e})
    if errors or refused:
        summary.failed += 1
        if not skip_bad:
            return
    if not feats:
        return
    writer.add(Row(vid=vid, split=ds.split_of[vid], labels=ds.labels.get(vid), features=feats))
    summary.done += 1
