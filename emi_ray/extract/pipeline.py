"""Raw media -> feature store on Ray Data: decode in parallel CPU tasks, encode in actor pools.

```
from_items(ids not yet in the store, plan.clips_per_task per block)
  .flat_map(decode_parts)        CPU tasks (plan.decode_cpus each, as many codec threads): PyAV
                                 frames at --fps, resized for the video encoder, in parts of
                                 plan.chunk_seconds; 16 kHz mono audio from audio/<id>.mp3 or the
                                 mp4; text/<id>.txt when no transcriber runs
  .map_batches(EncodeBatch)      ActorPoolStrategy(size=actors); each actor loads the plan's
                                 encoders once (num_gpus=1 only if the cluster has GPUs)
  .iter_rows()                   on the driver: Parts joins a clip's parts, StoreWriter.add per clip
```
When every encoder is weight-free (the lite preset; `Plan.fuse` overrides), decoding and
encoding are fused into one stage instead: `.map_batches(decode_encode)` CPU tasks
(decode_cpus + encoder_cpus each, one codec thread per CPU) that decode a block and encode it
in the same process (encoders built once per worker process, numpy only). The encoders cost a
few ms a clip, less than shipping frames to an actor, and no actor has to start.

Nothing is materialised: Ray Data's streaming executor and its backpressure bound what is
in flight (decoded blocks in the object store are capped at `plan.inflight_mb`), so memory
stays flat at any dataset size. A decoded row holds a whole clip, so
its size is T x size^2 x 3 bytes (about 0.75 MB per second of video at 224 px and 5 fps);
`--max-seconds` caps very long clips.

Failures never stop the run: decode and encode catch errors per row and return them in an
`error` column (JSON list of {stage, file, message}); they go to errors.csv. A row with an
error is left out of the store (a re-run retries it), or with `skip_bad` stored with the
modalities that worked. A video without an audio stream simply has no audio (not an error),
unless audio/<id>.mp3 exists. Whisper transcripts are written by the driver to
`transcripts/<id>.txt` (default: `<store>/text/`). Inputs and model paths must be readable
at the same paths on every node of a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.data.layout import Dataset, file_stem, read_layout
from emi_ray.data.store import Row, StoreWriter
from emi_ray.errors import EmiError, InputError
from emi_ray.extract.organiser import ExtractSummary, read_transcript
from emi_ray.extract.presets import Plan, check_paths, modality_entries, video_input_size

Progress = Callable[[int, int], None]


def _err(stage: str, file: Any, e: BaseException) -> dict[str, str]:
    msg = str(e) if isinstance(e, EmiError) else f"{type(e).__name__}: {e}"
    return {"stage": stage, "file": str(file or ""), "message": " ".join(msg.split())[:500]}


def decode_parts(item: dict[str, Any], *, fps: float, size: int | None, max_seconds: float | None,
                 sample_rate: int, want_video: bool, want_audio: bool, want_text: bool,
                 threads: int | None = None, chunk_frames: int | None = None) -> Iterator[dict[str, Any]]:
    """One id's media, decoded, as rows ("parts") streamed out as the video decodes: its frames in
    chunks of `chunk_frames` (None: one part), the audio, the text and any errors with the last
    part. Each row has `part` (0, 1, ...) and `parts` (the count on the last row, else 0);
    `Parts` joins them after encoding. `threads`: codec/scaler threads (None: ffmpeg's choice).
    Never raises: failures land in the `error` column."""
    from emi_ray.extract.decode import decode_audio, iter_video

    video_path, audio_path, text_path = item["video_path"], item["audio_path"], item["text_path"]
    source = audio_path or video_path
    base = {"id": int(item["id"]), "video_path": video_path or "", "audio_path": source or "",
            "text_path": text_path or ""}

    def row(frames: np.ndarray | None, part: int, parts: int = 0, **rest: Any) -> dict[str, Any]:
        return {**base, "frames": frames if frames is not None else np.zeros((0, size or 1, size or 1, 3), np.uint8),
                "has_video": frames is not None, "audio": np.zeros(0, np.float32), "has_audio": False,
                "text": "", "has_text": False, "error": "", "part": part, "parts": parts, **rest}

    errors: list[dict[str, str]] = []
    held, part = None, 0  # the latest chunk goes out once the next one exists: the last part is known
    if want_video and video_path:
        try:
            for chunk in iter_video(video_path, fps=fps, size=size, max_seconds=max_seconds, threads=threads,
                                    chunk_frames=chunk_frames):
                if held is not None:
                    yield row(held, part)
                    part += 1
                held = chunk
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the run
            errors.append(_err("decode-video", video_path, e))
            held = None  # the video is missing (with skip_bad), not cut short
    audio, has_audio = np.zeros(0, np.float32), False
    if want_audio and source:
        try:
            a = decode_audio(source, sample_rate=sample_rate, max_seconds=max_seconds, threads=threads)
            if a is not None:  # None: the mp4 has no audio stream (missing, not an error)
                audio, has_audio = a, True
        except Exception as e:  # noqa: BLE001
            err = _err("decode-audio", source, e)
            if not any(x["message"] == err["message"] for x in errors):  # same unreadable file
                errors.append(err)
    text, has_text = "", False
    if want_text and text_path:
        try:
            text, has_text = read_transcript(Path(text_path)), True
        except Exception as e:  # noqa: BLE001
            errors.append(_err("read-text", text_path, e))
    yield row(held, part, part + 1, audio=audio, has_audio=has_audio, text=text, has_text=has_text,
              error=json.dumps(errors) if errors else "")


def decode_item(item: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """One id's media decoded whole, as one row (`decode_parts` with one part)."""
    (only,) = decode_parts(item, **{**kwargs, "chunk_frames": None})
    return only


class Parts:
    """Joins the encoded parts of each clip (rows in any order) into one row, once all are in:
    video features concatenated in order, everything else from the last part, errors of all."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[int, Any]] = {}

    def add(self, row: Any) -> Any | None:
        """The whole clip's row when `row` completes it, else None."""
        part, parts = int(row.get("part", 0)), int(row.get("parts", 1))
        if part == 0 and parts == 1:
            return row
        got = self.pending.setdefault(int(row["id"]), {})
        got[part] = row
        last = next((r for r in got.values() if int(r["parts"])), None)
        if last is None or len(got) < int(last["parts"]):
            return None
        del self.pending[int(row["id"])]
        rows = [got[i] for i in range(len(got))]
        merged = dict(last)
        if "video" in last and len(last["video"]):  # no frames in the last part: the video failed
            merged["video"] = np.concatenate([np.asarray(r["video"], np.float32) for r in rows])
        errors = [e for r in rows if r["error"] for e in json.loads(r["error"])]
        merged["error"] = json.dumps(errors) if errors else ""
        return merged


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _as_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Decoded rows -> the numpy batch EncodeBatch takes (what Ray Data hands an actor)."""
    batch = {k: _objects([r[k] for r in rows]) for k in rows[0]}
    for k in ("id", "has_video", "has_audio", "has_text", "part", "parts"):
        batch[k] = np.array([r[k] for r in rows])
    return batch


def decode_kwargs(plan: Plan, size: int | None, threads: int | None) -> dict[str, Any]:
    """decode_parts's keyword arguments for `plan`."""
    return dict(fps=plan.fps, size=size, max_seconds=plan.max_seconds, sample_rate=plan.sample_rate,
                want_video=plan.video is not None,
                want_audio=plan.audio is not None or plan.transcriber is not None,
                want_text=plan.transcriber is None and plan.text is not None, threads=threads,
                chunk_frames=chunk_frames(plan))


def chunk_frames(plan: Plan) -> int | None:
    return None if plan.chunk_seconds is None else max(1, round(plan.chunk_seconds * plan.fps))


def _encoded_groups(rows: Iterable[dict[str, Any]], enc: EncodeBatch, max_rows: int,
                    max_frames: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Encode decoded rows in groups of up to `max_rows` rows or about `max_frames` frames."""
    group: list[dict[str, Any]] = []
    frames = 0
    for r in rows:
        group.append(r)
        frames += len(r["frames"])
        if len(group) >= max_rows or (max_frames is not None and frames >= max_frames):
            yield enc(_as_batch(group))
            group, frames = [], 0
    if group:
        yield enc(_as_batch(group))


class EncodeBatch:
    """A Ray Data actor: loads the plan's encoders once, encodes batches of decoded rows."""

    def __init__(self, choices: dict[str, dict[str, Any]], threads: int = 1, limit_threads: bool = True):
        from emi_ray.extract.encoders import create_encoder, encoder_info

        # weight-free encoders are numpy only: torch (seconds to import) only for model encoders
        torch = None
        if any(encoder_info(c["name"]).path is not None for c in choices.values()):
            import torch
        if limit_threads:  # an actor process: as many threads as the CPUs it asked Ray for
            if torch is not None:
                torch.set_num_threads(max(1, threads))
            try:  # numpy's BLAS too: oversubscribed BLAS threads are slow on a shared machine
                from threadpoolctl import threadpool_limits

                self._limits = threadpool_limits(max(1, threads))
            except ImportError:
                pass
        device = "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
        self.enc = {slot: create_encoder(c["name"], device=device, **{"cpu_threads": max(1, threads), **c["kwargs"]})
                    for slot, c in choices.items()}  # cpu_threads: whisper's CTranslate2 (others ignore it)

    def _stage(self, slot: str, inputs: list, idx: list[int], errors: list[list], files: list[str]) -> dict:
        """Encode `inputs` (rows `idx`) as one call; if it fails, row by row to find the bad one."""
        enc = self.enc[slot]
        if not idx:
            return {}
        try:
            return dict(zip(idx, enc.encode(inputs)))
        except Exception:  # noqa: BLE001 - retry one by one below
            pass
        out = {}
        for i, x in zip(idx, inputs):
            try:
                out[i] = enc.encode([x])[0]
            except Exception as e:  # noqa: BLE001
                errors[i].append(_err(f"encode-{slot}", files[i], e))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["id"])
        errors = [json.loads(e) if e else [] for e in batch["error"]]
        vfiles, afiles = list(batch["video_path"]), list(batch["audio_path"])
        out: dict[str, Any] = {"id": batch["id"]}
        if "video" in self.enc:
            dim = self.enc["video"].dim
            idx = [i for i in range(n) if batch["has_video"][i]]
            got = self._stage("video", [batch["frames"][i] for i in idx], idx, errors, vfiles)
            out["video"] = _objects([got.get(i, np.zeros((0, dim), np.float32)) for i in range(n)])
        audio_idx = [i for i in range(n) if batch["has_audio"][i]]
        if "audio" in self.enc:
            dim = self.enc["audio"].dim
            got = self._stage("audio", [batch["audio"][i] for i in audio_idx], audio_idx, errors, afiles)
            out["audio"] = _objects([got.get(i, np.zeros((0, dim), np.float32)) for i in range(n)])
        texts: dict[int, str] = {}
        if "transcriber" in self.enc:
            texts = self._stage("transcriber", [batch["audio"][i] for i in audio_idx], audio_idx, errors, afiles)
            out["transcript"] = _objects([texts.get(i, "") for i in range(n)])
            out["has_transcript"] = np.array([i in texts for i in range(n)])
        elif "text" in self.enc:
            texts = {i: str(batch["text"][i]) for i in range(n) if batch["has_text"][i]}
        if "text" in self.enc:
            dim = self.enc["text"].dim
            idx = sorted(texts)
            tfiles = list(batch["text_path"]) if "transcriber" not in self.enc else afiles
            got = self._stage("text", [texts[i] for i in idx], idx, errors, tfiles)
            out["text"] = np.stack([np.asarray(got[i], np.float32) if i in got else np.zeros(dim, np.float32)
                                    for i in range(n)])
            out["has_text"] = np.array([i in got for i in range(n)])
        out["error"] = _objects([json.dumps(e) if e else "" for e in errors])
        for k in ("part", "parts"):  # a long clip's rows: Parts joins them on the driver
            if k in batch:
                out[k] = batch[k]
        return out


_FUSED: dict[str, EncodeBatch] = {}  # per worker process: encoders load once, not per task


def decode_encode(batch: dict[str, np.ndarray], *, choices: dict[str, dict[str, Any]], threads: int,
                  decode: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Decode and encode a batch of work items in one Ray task (the fused pipeline: for cheap,
    weight-free encoders, moving frames between processes costs more than encoding them).
    Encodes as the parts come, about one chunk of frames at a time: a long clip is never whole."""
    key = json.dumps(choices, sort_keys=True)
    enc = _FUSED.get(key)
    if enc is None:
        enc = _FUSED[key] = EncodeBatch(choices, threads=threads)
    cols = list(batch)
    rows = (r for i in range(len(batch["id"])) for r in decode_parts({c: batch[c][i] for c in cols}, **decode))
    yield from _encoded_groups(rows, enc, len(batch["id"]), decode["chunk_frames"])


def fused(plan: Plan) -> bool:
    """Whether decode and encode run in the same tasks: `plan.fuse`, or by default when every
    encoder is weight-free (numpy only, a few ms a clip)."""
    from emi_ray.extract.encoders import encoder_info

    if plan.fuse is not None:
        return plan.fuse
    return all(encoder_info(c.name).path is None for c in plan.choices().values())


def fused_blocks(n_items: int, plan: Plan, cluster_cpus: float) -> int:
    """Blocks (tasks) for the fused plan: about plan.clips_per_task clips each, rounded up to a
    whole number of rounds over the cluster's task slots, so no lone task runs at the end."""
    slots = max(1, int(cluster_cpus // (plan.decode_cpus + plan.encoder_cpus)))
    blocks = -(-n_items // plan.clips_per_task)
    return max(1, min(n_items, -(-blocks // slots) * slots))


def work_items(ds: Dataset, ids: list[int], with_text: bool) -> list[dict[str, Any]]:
    def s(p: Path | None) -> str:
        return str(p) if p is not None else ""

    return [{"id": i, "video_path": s(ds.path("raw", i)), "audio_path": s(ds.path("audio", i)),
             "text_path": s(ds.path("text", i)) if with_text else ""} for i in ids]


def plan_resources(plan: Plan, actors: int, cluster_cpus: float) -> tuple[float, float]:
    """(CPUs per decode task, CPUs per encoder actor) as asked to Ray; refuses plans that cannot run.

    Equal requests would make Ray Data fuse decoding into the encoder actors (no separate CPU
    tasks), so the decode request is nudged down a hair. The actors plus one decode task must
    fit the cluster, or the pipeline would wait forever for a decode slot."""
    decode, encoder = plan.decode_cpus, plan.encoder_cpus
    if abs(decode - encoder) < 1e-3:
        decode = max(decode - 1e-3, 1e-3)
    need = actors * encoder + decode
    if need > cluster_cpus + 1e-9:
        raise InputError(
            f"{actors} encoder actor(s) x {encoder:g} CPU + one decode task x {decode:g} CPU = {need:g} CPUs, "
            f"but the Ray cluster has {cluster_cpus:g}; lower --actors (or join a bigger cluster with --address)")
    return decode, encoder


def build_dataset(items: list[dict[str, Any]], plan: Plan, size: int | None):
    """The lazy Ray Data pipeline (decode tasks -> encoder actor pool, or fused decode+encode
    tasks, see `fused`); iterate it to run."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.print_on_execution_start = False
    if plan.inflight_mb:  # decoded frames are big: cap what waits in the object store
        from ray.data import ExecutionResources

        ctx.execution_options.resource_limits = ExecutionResources.for_limits(
            object_store_memory=plan.inflight_mb * 2**20)
    resources = ray.cluster_resources()
    gpus, cluster_cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    actors = plan.actors or (max(1, int(gpus)) if gpus else 1)
    choices = {slot: {"name": c.name, "kwargs": c.kwargs()} for slot, c in plan.choices().items()}
    fuse = fused(plan)
    # Ray Data's per-operator resource reservation (ReservationOpResourceAllocator) admitted
    # the fused 1-CPU tasks one at a time on a 2-CPU cluster (measured: 13 tasks ran in series);
    # a single map stage has no other stage to reserve against. Two stages keep Ray's default.
    ctx.op_resource_reservation_enabled = not fuse
    if fuse:  # one task decodes and encodes its block; codec threads = CPUs it asked for
        cpus = plan.decode_cpus + plan.encoder_cpus
        if cpus > cluster_cpus + 1e-9:
            raise InputError(f"a decode+encode task asks {cpus:g} CPUs (--decode-cpus + --encoder-cpus), but the "
                             f"Ray cluster has {cluster_cpus:g}")
        threads = max(1, round(cpus))
        ds = ray.data.from_items(items, override_num_blocks=fused_blocks(len(items), plan, cluster_cpus))
        return ds.map_batches(decode_encode, fn_kwargs=dict(
            choices=choices, threads=threads, decode=decode_kwargs(plan, size, threads)),
            batch_size=plan.batch_size, batch_format="numpy", num_cpus=cpus)
    blocks = max(1, -(-len(items) // plan.clips_per_task))  # a decode task handles one block
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    decode_cpus, encoder_cpus = plan_resources(plan, actors, cluster_cpus)
    # parallelism comes from the tasks: each decodes with as many codec threads as CPUs it asked for
    ds = ds.flat_map(decode_parts, num_cpus=decode_cpus,
                     fn_kwargs=decode_kwargs(plan, size, max(1, round(decode_cpus))))
    return ds.map_batches(
        EncodeBatch, fn_constructor_kwargs={"choices": choices, "threads": max(1, round(encoder_cpus))},
        batch_size=plan.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
        num_cpus=encoder_cpus, num_gpus=1 if gpus else 0)


def iter_local(items: list[dict[str, Any]], plan: Plan, size: int | None, threads: int | None = None):
    """The same decode and encode steps in this process, one batch at a time (no Ray):
    the sequential baseline of the benchmark, and handy for debugging an encoder.
    `threads`: codec/scaler threads per decode and numpy BLAS threads while it runs (None:
    ffmpeg's and BLAS's own choice)."""
    import contextlib

    choices = {slot: {"name": c.name, "kwargs": c.kwargs()} for slot, c in plan.choices().items()}
    enc = EncodeBatch(choices, threads=max(1, round(plan.encoder_cpus)), limit_threads=False)
    kw = decode_kwargs(plan, size, threads)
    limits: Any = contextlib.nullcontext()
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(threads)
        except ImportError:  # an optional dependency (scikit-learn's)
            pass
    with limits:
        for start in range(0, len(items), plan.batch_size):
            rows = (r for it in items[start : start + plan.batch_size] for r in decode_parts(it, **kw))
            for out in _encoded_groups(rows, enc, plan.batch_size, kw["chunk_frames"]):
                for i in range(len(out["id"])):
                    yield {k: v[i] for k, v in out.items()}


def run_extract(data_dir: str | Path, out: str | Path, plan: Plan, *, skip_bad: bool = False,
                address: str | None = None, num_cpus: int | None = None, command: str = "",
                transcripts: str | Path | None = None, progress: Progress | None = None,
                local: bool = False, local_threads: int | None = None) -> ExtractSummary:
    """Extract features of every not-yet-stored id of `data_dir` into the store `out`.

    `local=True` runs the same steps sequentially in this process, without Ray, decoding with
    `local_threads` codec/scaler threads (None: ffmpeg's choice)."""
    check_paths(plan)  # every missing model path in one message, before any work
    ds = read_layout(data_dir)
    ids = [i for i in ds.ids() if ds.path("raw", i) is not None or ds.path("audio", i) is not None]
    if not ids:
        raise InputError(f"{ds.root}: no raw/*.mp4 or audio/*.mp3 media to extract "
                         f"(for organiser vit/wav2vec2 pickles use --preset organiser)")
    with_text = plan.text is not None and (plan.transcriber is not None or bool(ds.files.get("text")))
    modalities = modality_entries(plan, with_text)
    size = video_input_size(plan)
    writer = StoreWriter(out, modalities, command=command, source=str(ds.root))
    summary = ExtractSummary(store=Path(out))
    done = writer.done_ids()
    todo = [i for i in ids if i not in done]
    summary.skipped = len(ids) - len(todo)
    tdir = Path(transcripts) if transcripts else Path(out) / "text"
    try:
        if todo:
            items = work_items(ds, todo, with_text and plan.transcriber is None)
            if local:
                rows = iter_local(items, plan, size, local_threads)
            else:
                from emi_ray.ray_env import init_ray

                init_ray(address, num_cpus=num_cpus)
                rows = build_dataset(items, plan, size).iter_rows()
            if progress:
                progress(0, len(todo))
            parts, n = Parts(), 0
            for part in rows:
                row = parts.add(part)
                if row is None:  # more parts of this clip to come
                    continue
                _store_row(row, ds, modalities, writer, summary, skip_bad, plan, tdir)
                n += 1
                if progress:
                    progress(n, len(todo))
    finally:  # keep what finished, so a re-run resumes after a crash or Ctrl-C
        writer.close()
        writer.write_errors(summary.errors)
    return summary


def _store_row(row: dict[str, Any], ds: Dataset, modalities: dict, writer: StoreWriter,
               summary: ExtractSummary, skip_bad: bool, plan: Plan, tdir: Path) -> None:
    vid = int(row["id"])
    errors = json.loads(row["error"]) if row["error"] else []
    if plan.transcriber is not None and row.get("has_transcript"):
        from emi_ray.io import atomic_write_text

        atomic_write_text(tdir / f"{file_stem(vid)}.txt", str(row["transcript"]) + "\n")
    feats: dict[str, np.ndarray] = {}
    for m in ("video", "audio"):
        if m in modalities and len(row[m]):
            feats[m] = np.asarray(row[m], np.float32)
    if "text" in modalities and row["has_text"]:
        feats["text"] = np.asarray(row["text"], np.float32)
    for e in errors:
        summary.errors.append({"id": str(vid), **e})
    if errors:
        summary.failed += 1
        if not skip_bad:
            return
    if not feats:
        return
    writer.add(Row(vid=vid, split=ds.split_of[vid], labels=ds.labels.get(vid), features=feats))
    summary.done += 1
