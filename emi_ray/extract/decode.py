"""Decode media with PyAV: video resampled by time, audio as mono float32.

Video frames are sampled at k / fps by time, not by frame index, and turned upright
(resample.py has the rules). Decoding streams frame by frame and stops once
`max_seconds` is covered; `iter_video` hands the frames out in chunks of a fixed count
as they are decoded, so a long clip is never held whole.

Damaged files: a missing, empty, unreadable or truncated-before-the-index file (an mp4
whose index, the moov atom, sits at the end, as PyAV and ffmpeg write by default), a file
without a video stream (for `decode_video`) or without any audio/video stream (for
`decode_audio`), or one whose stream yields no frames or samples raises `InputError`
naming the file. If decoding fails *after* some frames or
samples came out (a file cut short mid-stream), the result holds what was decoded up to
the failure: the same file always gives the same, shorter, result. An mp4 cut inside its
index may still open with some streams missing; `decode_audio` then returns None as for
a file without audio (nothing in the container tells the two apart).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from emi_ray.errors import InputError
from emi_ray.extract.resample import TimeResampler


@dataclass
class VideoFrames:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB; H = W = size unless size is None
    times: np.ndarray  # float64 (T,) target times in seconds, k / fps
    source_fps: float  # the stream's own (average) frame rate, from metadata or measured
    rotation: int = 0  # degrees counter-clockwise applied from the display matrix


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: media file not found")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: media file is empty (0 bytes)")
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise InputError(
            f"{p}: cannot read media ({why}); the file is damaged or not audio/video"
        ) from e
    try:
        yield container
    finally:
        container.close()


def _set_threads(stream, threads: int | None) -> None:
    """ffmpeg's own choice (None: frame and slice threads, count from the CPUs), or N threads."""
    if threads is None:
        stream.thread_type = "AUTO"
    elif threads > 1:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = int(threads)
    else:
        stream.codec_context.thread_count = 1


def decode_video(
    path: str | Path,
    fps: float = 5.0,
    size: int | None = 224,
    max_seconds: float | None = None,
    threads: int | None = None,
) -> VideoFrames:
    """Decode the first video stream of `path` at `fps` frames per second (see module doc).

    Returns uint8 (T, size, size, 3) RGB frames (`size=None` keeps the native size,
    rotated upright) and their target times k / fps. `threads`: None leaves threading to
    ffmpeg (codec and scaler pick a thread count from the CPUs); N uses N threads for
    each (1 where parallelism comes from several decode processes, as in the pipeline).
    """
    stream = iter_video(path, fps=fps, size=size, max_seconds=max_seconds, threads=threads)
    chunks = []
    while True:
        try:
            chunks.append(next(stream))
        except StopIteration as stop:
            source_fps, rotation = stop.value
            break
    frames = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return VideoFrames(frames=frames, times=np.arange(len(frames), dtype=np.float64) / fps,
                       source_fps=source_fps, rotation=rotation)


def iter_video(
    path: str | Path,
    fps: float = 5.0,
    size: int | None = 224,
    max_seconds: float | None = None,
    threads: int | None = None,
    chunk_frames: int | None = None,
) -> Generator[np.ndarray, None, tuple[float, int]]:
    """`decode_video` as a stream: uint8 (n, size, size, 3) arrays of `chunk_frames` frames
    (the last one shorter; None: one array for the whole clip), in time order, so a long clip
    never sits in memory whole. The generator returns (source_fps, rotation) when it ends."""
    _check_video_args(fps, size, max_seconds, chunk_frames)
    p = Path(path)
    with _open(p) as container:
        if not container.streams.video:
            raise InputError(f"{p}: no video stream in this file")
        stream = container.streams.video[0]
        _set_threads(stream, threads)
        tb = stream.time_base
        t0 = float(stream.start_time * tb) if stream.start_time is not None and tb else None
        frames = TimeResampler(fps, size, max_seconds, chunk_frames, threads,
                               meta_rate=stream.average_rate or stream.guessed_rate, t0=t0)
        try:
            for frame in container.decode(stream):
                yield from frames.add(frame)
                if frames.covered:
                    break
        except av.FFmpegError as e:
            if frames.prev is None:
                raise InputError(f"{p}: cannot decode video ({e}); the file is damaged") from e
            # a file cut short mid-stream: keep what was decoded up to the failure
        if frames.prev is None:
            raise InputError(f"{p}: the video stream has no decodable frames")
        yield from frames.finish()
        return frames.source_fps(), frames.rotation()


def _check_video_args(fps: float, size: int | None, max_seconds: float | None, chunk_frames: int | None) -> None:
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1 or None, got {size}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1 or None, got {chunk_frames}")


def decode_audio(
    path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None,
    threads: int | None = None,
) -> np.ndarray | None:
    """Mono float32 audio in [-1, 1] at `sample_rate` from `path` (.mp4, .mp3, ...).

    Returns None when the file has no audio stream. Decodes as a stream and stops once
    `max_seconds` of audio are out (the result is cut to exactly that many samples).
    `threads` as for `decode_video` (audio codecs rarely use more than one).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    p = Path(path)
    limit = None if max_seconds is None else int(round(max_seconds * sample_rate))
    with _open(p) as container:
        if not container.streams.audio:
            if not container.streams.video:
                raise InputError(f"{p}: no audio or video stream in this file")
            return None
        stream = container.streams.audio[0]
        if threads is not None:
            _set_threads(stream, threads)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        n = 0

        def take(frames) -> None:
            nonlocal n
            for f in frames:
                a = f.to_ndarray().reshape(-1)
                chunks.append(a)
                n += a.size

        try:
            for frame in container.decode(stream):
                take(resampler.resample(frame))
                if limit is not None and n >= limit:
                    break
            take(resampler.resample(None))
        except av.FFmpegError as e:
            if n == 0:
                raise InputError(f"{p}: cannot decode audio ({e}); the file is damaged") from e
            # a file cut short mid-stream: keep what was decoded up to the failure
        if n == 0:
            raise InputError(f"{p}: the audio stream has no decodable samples")
        audio = np.concatenate(chunks)
        if limit is not None:
            audio = audio[:limit]
        return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def probe(path: str | Path) -> dict:
    """Container facts without decoding: duration (s, or None), has_video, has_audio,
    fps (video metadata rate, or None), width/height (or None), sample_rate (or None)."""
    p = Path(path)
    with _open(p) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        duration = None
        if c.duration is not None:
            duration = c.duration / av.time_base
        else:
            ds = [float(s.duration * s.time_base) for s in (v, a) if s is not None and s.duration]
            duration = max(ds) if ds else None
        rate = (v.average_rate or v.guessed_rate) if v is not None else None
        return {
            "duration": duration,
            "has_video": v is not None,
            "has_audio": a is not None,
            "fps": float(rate) if rate else None,
            "width": v.width if v is not None else None,
            "height": v.height if v is not None else None,
            "sample_rate": a.sample_rate if a is not None else None,
        }
