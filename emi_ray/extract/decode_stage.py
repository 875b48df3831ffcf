"""The decode stage: one work item (an id's media paths) -> decoded rows, never raising.

Each row holds frames at the plan's fps, resized for the video encoder, in parts of
`plan.chunk_seconds`; 16 kHz mono audio from audio/<id>.mp3 or the mp4; text/<id>.txt when
no transcriber runs. A decoded row holds a whole part, so its size is T x size^2 x 3 bytes
(about 0.75 MB per second of video at 224 px and 5 fps). A video without an audio stream
simply has no audio (not an error), unless audio/<id>.mp3 exists. Failures land in the row's
`error` column (rows.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.data.layout import Dataset
from emi_ray.extract.decode import decode_audio, iter_video
from emi_ray.extract.organiser import read_transcript
from emi_ray.extract.presets import Plan
from emi_ray.extract.rows import stage_error


def work_items(ds: Dataset, ids: list[int], with_text: bool) -> list[dict[str, Any]]:
    """The decode stage's inputs: each id's video, audio and (`with_text`) text paths ("" if none)."""
    def s(p: Path | None) -> str:
        return str(p) if p is not None else ""

    return [{"id": i, "video_path": s(ds.path("raw", i)), "audio_path": s(ds.path("audio", i)),
             "text_path": s(ds.path("text", i)) if with_text else "", "max_bytes": ds.max_file_bytes} for i in ids]


def decode_parts(item: dict[str, Any], *, fps: float, size: int | None, max_seconds: float | None,
                 sample_rate: int, want_video: bool, want_audio: bool, want_text: bool,
                 threads: int | None = None, chunk_frames: int | None = None) -> Iterator[dict[str, Any]]:
    """One id's media, decoded, as rows ("parts") streamed out as the video decodes: its frames in
    chunks of `chunk_frames` (None: one part), the audio, the text and any errors with the last
    part. Each row has `part` (0, 1, ...) and `parts` (the count on the last row, else 0);
    `Parts` joins them after encoding. `threads`: codec/scaler threads (None: ffmpeg's choice).
    Never raises: failures land in the `error` column."""
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
            errors.append(stage_error("decode-video", video_path, e))
            held = None  # the video is missing (with skip_bad), not cut short
    audio, has_audio = _audio(source if want_audio else "", sample_rate, max_seconds, threads, errors)
    text, has_text = "", False
    if want_text and text_path:
        try:
            limit = item.get("max_bytes")
            text, has_text = read_transcript(Path(text_path), None if limit is None else int(limit)), True
        except Exception as e:  # noqa: BLE001
            errors.append(stage_error("read-text", text_path, e))
    yield row(held, part, part + 1, audio=audio, has_audio=has_audio, text=text, has_text=has_text,
              error=json.dumps(errors) if errors else "")


def _audio(source: str, sample_rate: int, max_seconds: float | None, threads: int | None,
           errors: list[dict[str, str]]) -> tuple[np.ndarray, bool]:
    """(waveform, whether there is one) of `source` ("" for none); a failure goes to `errors`."""
    if not source:
        return np.zeros(0, np.float32), False
    try:
        a = decode_audio(source, sample_rate=sample_rate, max_seconds=max_seconds, threads=threads)
    except Exception as e:  # noqa: BLE001
        err = stage_error("decode-audio", source, e)
        if not any(x["message"] == err["message"] for x in errors):  # same unreadable file
            errors.append(err)
        return np.zeros(0, np.float32), False
    if a is None:  # the mp4 has no audio stream (missing, not an error)
        return np.zeros(0, np.float32), False
    return a, True


def decode_item(item: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """One id's media decoded whole, as one row (`decode_parts` with one part)."""
    (only,) = decode_parts(item, **{**kwargs, "chunk_frames": None})
    return only


def chunk_frames(plan: Plan) -> int | None:
    """Frames per part (None: a clip is one part)."""
    return None if plan.chunk_seconds is None else max(1, round(plan.chunk_seconds * plan.fps))


def decode_kwargs(plan: Plan, size: int | None, threads: int | None) -> dict[str, Any]:
    """decode_parts's keyword arguments for `plan`."""
    return dict(fps=plan.fps, size=size, max_seconds=plan.max_seconds, sample_rate=plan.sample_rate,
                want_video=plan.video is not None,
                want_audio=plan.audio is not None or plan.transcriber is not None,
                want_text=plan.transcriber is None and plan.text is not None, threads=threads,
                chunk_frames=chunk_frames(plan))
