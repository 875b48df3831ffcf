"""Decode media with PyAV: video resampled by time, audio as mono float32.

Video is resampled *by time*, never by frame index: the target times are k / fps
(k = 0, 1, ...) measured from the stream's start, and each target takes the latest
decoded frame whose timestamp is <= the target (a target before the first frame takes
the first frame). So variable frame rates, odd rates and bogus rate metadata (the
dataset has 25-1000 fps in its headers) give the same sampling. Targets run up to the
end of the last decoded frame (its timestamp plus its duration), capped at
`max_seconds`; decoding streams frame by frame (only the latest native frame is held)
and stops once `max_seconds` is covered. `iter_video` hands the frames out in chunks of a
fixed count as they are decoded, so a long clip is never held whole.

Rotation: PyAV 18 exposes the display matrix as `VideoFrame.rotation` (degrees,
counter-clockwise, from the stream's or frame's DISPLAYMATRIX side data). Right-angle
rotations are applied with `np.rot90`, so phone videos come out upright; other angles
and mirror flips in the matrix are ignored.

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

import numpy as np

from emi_ray.errors import InputError

_EPS = 1e-6


@dataclass
class VideoFrames:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB; H = W = size unless size is None
    times: np.ndarray  # float64 (T,) target times in seconds, k / fps
    source_fps: float  # the stream's own (average) frame rate, from metadata or measured
    rotation: int = 0  # degrees counter-clockwise applied from the display matrix


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator:
    import av

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


def _rotation_steps(frame) -> int:
    """Quarter turns counter-clockwise from the display matrix (0 if none or not a right angle)."""
    try:
        deg = float(frame.rotation)
    except Exception:  # no display matrix, or a PyAV without the property
        return 0
    quarter = round(deg / 90.0)
    return int(quarter) % 4 if abs(deg - 90.0 * quarter) < 1.0 else 0


def _set_threads(stream, threads: int | None) -> None:
    """ffmpeg's own choice (None: frame and slice threads, count from the CPUs), or N threads."""
    if threads is None:
        stream.thread_type = "AUTO"
    elif threads > 1:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = int(threads)
    else:
        stream.codec_context.thread_count = 1


def _sws_threads(threads: int | None) -> int:
    return 0 if threads is None else max(1, int(threads))  # 0: swscale picks (one per CPU)


def _to_rgb(frame, size: int | None, reformatter, threads: int) -> np.ndarray:
    """RGB pixels of `frame` through one reused swscale context (`reformatter`): PyAV's
    `frame.to_ndarray(width=...)` builds a fresh context, and with it a thread pool, per frame."""
    if size is None:
        arr = reformatter.reformat(frame, format="rgb24", threads=threads).to_ndarray()
    else:  # scale the short side to `size`, then center-crop the long side
        w, h = frame.width, frame.height
        scale = size / min(w, h)
        sw, sh = max(size, round(w * scale)), max(size, round(h * scale))
        arr = reformatter.reformat(frame, width=sw, height=sh, format="rgb24", interpolation="AREA",
                                   threads=threads).to_ndarray()
        y0, x0 = (sh - size) // 2, (sw - size) // 2
        arr = arr[y0 : y0 + size, x0 : x0 + size]
    k = _rotation_steps(frame)
    return np.ascontiguousarray(np.rot90(arr, k) if k else arr)


def _frame_seconds(frame) -> float | None:
    if frame.duration and frame.time_base is not None:
        d = float(frame.duration * frame.time_base)
        return d if d > 0 else None
    return None


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


def _full_chunks(out: list[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    while n and len(out) >= n:
        yield np.stack(out[:n])
        del out[:n]


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
    import av
    from av.video.reformatter import VideoReformatter

    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1 or None, got {size}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1 or None, got {chunk_frames}")
    p = Path(path)
    cap = np.inf if max_seconds is None else float(max_seconds)
    with _open(p) as container:
        if not container.streams.video:
            raise InputError(f"{p}: no video stream in this file")
        stream = container.streams.video[0]
        _set_threads(stream, threads)
        reformatter, sws_threads = VideoReformatter(), _sws_threads(threads)
        tb = stream.time_base
        t0 = float(stream.start_time * tb) if stream.start_time is not None and tb else None
        meta_rate = stream.average_rate or stream.guessed_rate
        out: list[np.ndarray] = []  # frames not yet handed out
        prev = prev_arr = None  # the latest decoded frame (pts <= next target) and its pixels
        last_t = first_t = None
        last_dur = None
        n_native = 0
        k = 0  # next target index

        def emit(frame) -> None:
            nonlocal prev_arr, k
            if prev_arr is None or prev_arr[0] is not frame:
                prev_arr = (frame, _to_rgb(frame, size, reformatter, sws_threads))
            out.append(prev_arr[1])
            k += 1

        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:  # no timestamp: continue from the previous frame
                    step = last_dur or (1.0 / float(meta_rate) if meta_rate else 0.04)
                    t = 0.0 if last_t is None else last_t + step
                else:
                    if t0 is None:  # no stream start time: the first frame is time 0
                        t0 = t
                    t = t - t0
                first_t = t if first_t is None else first_t
                # every target strictly before this frame takes the previous frame
                while k / fps < min(t - _EPS, cap - _EPS):
                    emit(prev if prev is not None else frame)
                    yield from _full_chunks(out, chunk_frames)
                n_native += 1
                dur = _frame_seconds(frame)
                gap = None if last_t is None or t <= last_t else t - last_t
                last_dur = dur or gap or last_dur
                prev, last_t = frame, t
                if t >= cap - _EPS:
                    break
        except av.FFmpegError as e:
            if prev is None:
                raise InputError(f"{p}: cannot decode video ({e}); the file is damaged") from e
            # a file cut short mid-stream: keep what was decoded up to the failure
        if prev is None:
            raise InputError(f"{p}: the video stream has no decodable frames")
        if last_dur is None:
            last_dur = 1.0 / float(meta_rate) if meta_rate else 1.0 / fps
        end = min(cap, last_t + last_dur)
        while k / fps < end - _EPS:
            emit(prev)
            yield from _full_chunks(out, chunk_frames)
        if k == 0:  # e.g. a single frame after max_seconds: still give one frame
            emit(prev)
        if out:
            yield np.stack(out)
        if meta_rate:
            source_fps = float(meta_rate)
        elif n_native > 1 and last_t > first_t:
            source_fps = (n_native - 1) / (last_t - first_t)
        else:
            source_fps = 0.0
        return source_fps, 90 * _rotation_steps(prev)


def decode_audio(
    path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None,
    threads: int | None = None,
) -> np.ndarray | None:
    """Mono float32 audio in [-1, 1] at `sample_rate` from `path` (.mp4, .mp3, ...).

    Returns None when the file has no audio stream. Decodes as a stream and stops once
    `max_seconds` of audio are out (the result is cut to exactly that many samples).
    `threads` as for `decode_video` (audio codecs rarely use more than one).
    """
    import av

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
    import av

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
