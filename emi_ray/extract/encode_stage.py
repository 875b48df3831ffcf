"""The encode stage: `EncodeBatch` loads the plan's encoders once and encodes decoded rows.

In the pipeline it is a Ray Data actor (one per `--actors`, num_gpus=1 only if the cluster
has GPUs), or it runs inside the fused decode+encode tasks and the local loop. A batch that
fails is retried row by row, so one bad clip costs only its own row: the failure lands in
its `error` column. Weight-free encoders are numpy only: torch loads only for model ones.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from emi_ray.extract.encoders import create_encoder, encoder_info
from emi_ray.extract.presets import Plan
from emi_ray.extract.rows import objects, stage_error

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # an optional dependency (scikit-learn's)
    threadpool_limits = None


def blas_limits(threads: int | None) -> Any:
    """A context limiting numpy's BLAS to `threads` threads (None, or no threadpoolctl: no limit).
    Oversubscribed BLAS threads are slow on a shared machine."""
    if threads is None or threadpool_limits is None:
        return contextlib.nullcontext()
    return threadpool_limits(threads)


def as_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Decoded rows -> the numpy batch EncodeBatch takes (what Ray Data hands an actor)."""
    batch = {k: objects([r[k] for r in rows]) for k in rows[0]}
    for k in ("id", "has_video", "has_audio", "has_text", "part", "parts"):
        batch[k] = np.array([r[k] for r in rows])
    return batch


def encoded_groups(rows: Iterable[dict[str, Any]], enc: EncodeBatch, max_rows: int,
                   max_frames: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Encode decoded rows in groups of up to `max_rows` rows or about `max_frames` frames."""
    group: list[dict[str, Any]] = []
    frames = 0
    for r in rows:
        group.append(r)
        frames += len(r["frames"])
        if len(group) >= max_rows or (max_frames is not None and frames >= max_frames):
            yield enc(as_batch(group))
            group, frames = [], 0
    if group:
        yield enc(as_batch(group))


def encoder_choices(plan: Plan) -> dict[str, dict[str, Any]]:
    """{slot: {name, kwargs}}: what EncodeBatch builds, in a form Ray ships to workers."""
    return {slot: {"name": c.name, "kwargs": c.kwargs()} for slot, c in plan.choices().items()}


def _torch(choices: dict[str, dict[str, Any]]) -> Any:
    """torch if any encoder of `choices` is a model, else None."""
    if not any(encoder_info(c["name"]).path is not None for c in choices.values()):
        return None
    import torch  # lazy: seconds to import, and weight-free encoders never need it

    return torch


class EncodeBatch:
    """A Ray Data actor: loads the plan's encoders once, encodes batches of decoded rows."""

    def __init__(self, choices: dict[str, dict[str, Any]], threads: int = 1, limit_threads: bool = True):
        torch = _torch(choices)
        if limit_threads:  # an actor process: as many threads as the CPUs it asked Ray for
            if torch is not None:
                torch.set_num_threads(max(1, threads))
            self._limits = blas_limits(max(1, threads))  # kept: the limit lasts the actor's life
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
                errors[i].append(stage_error(f"encode-{slot}", files[i], e))
        return out

    def _sequences(self, slot: str, inputs: list, idx: list[int], n: int, errors: list[list],
                   files: list[str]) -> np.ndarray:
        """A (T, dim) array per row (empty for rows not in `idx` or whose encoding failed)."""
        dim = self.enc[slot].dim
        got = self._stage(slot, inputs, idx, errors, files)
        return objects([got.get(i, np.zeros((0, dim), np.float32)) for i in range(n)])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["id"])
        errors = [json.loads(e) if e else [] for e in batch["error"]]
        vfiles, afiles = list(batch["video_path"]), list(batch["audio_path"])
        out: dict[str, Any] = {"id": batch["id"]}
        if "video" in self.enc:
            idx = [i for i in range(n) if batch["has_video"][i]]
            out["video"] = self._sequences("video", [batch["frames"][i] for i in idx], idx, n, errors, vfiles)
        audio_idx = [i for i in range(n) if batch["has_audio"][i]]
        if "audio" in self.enc:
            waves = [batch["audio"][i] for i in audio_idx]
            out["audio"] = self._sequences("audio", waves, audio_idx, n, errors, afiles)
        texts: dict[int, str] = {}
        if "transcriber" in self.enc:
            texts = self._stage("transcriber", [batch["audio"][i] for i in audio_idx], audio_idx, errors, afiles)
            out["transcript"] = objects([texts.get(i, "") for i in range(n)])
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
        out["error"] = objects([json.dumps(e) if e else "" for e in errors])
        for k in ("part", "parts"):  # a long clip's rows: Parts joins them on the driver
            if k in batch:
                out[k] = batch[k]
        return out
