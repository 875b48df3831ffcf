"""Video resampled by time: which decoded frame each target time takes, and its RGB pixels.

Video is resampled *by time*, never by frame index: the target times are k / fps
(k = 0, 1, ...) measured from the stream's start, and each target takes the latest
decoded frame whose timestamp is <= the target (a target before the first frame takes
the first frame). So variable frame rates, odd rates and bogus rate metadata (the
dataset has 25-1000 fps in its headers) give the same sampling. Targets run up to the
end of the last decoded frame (its timestamp plus its duration), capped at
`max_seconds`. `TimeResampler` takes the decoded frames one by one (only the latest native
frame is held) and hands the sampled frames out in chunks of a fixed count.

Rotation: PyAV 18 exposes the display matrix as `VideoFrame.rotation` (degrees,
counter-clockwise, from the stream's or frame's DISPLAYMATRIX side data). Right-angle
rotations are applied with `np.rot90`, so phone videos come out upright; other angles
and mirror flips in the matrix are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from av.video.reformatter import VideoReformatter

_EPS = 1e-6


def rotation_steps(frame) -> int:
    """Quarter turns counter-clockwise from the display matrix (0 if none or not a right angle)."""
    try:
        deg = float(frame.rotation)
    except Exception:  # no display matrix, or a PyAV without the property
        return 0
    quarter = round(deg / 90.0)
    return int(quarter) % 4 if abs(deg - 90.0 * quarter) < 1.0 else 0


def sws_threads(threads: int | None) -> int:
    return 0 if threads is None else max(1, int(threads))  # 0: swscale picks (one per CPU)


def to_rgb(frame, size: int | None, reformatter, threads: int) -> np.ndarray:
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
    k = rotation_steps(frame)
    return np.ascontiguousarray(np.rot90(arr, k) if k else arr)


def _frame_seconds(frame) -> float | None:
    if frame.duration and frame.time_base is not None:
        d = float(frame.duration * frame.time_base)
        return d if d > 0 else None
    return None


class TimeResampler:
    """Decoded frames in (`add`), frames at k / fps out, in chunks of `chunk_frames` (None: all
    at the end); `finish` once the stream ends. `t0`: the stream's start time (None: the first
    frame's time), `meta_rate`: its metadata frame rate (None if unknown)."""

    def __init__(self, fps: float, size: int | None, max_seconds: float | None, chunk_frames: int | None,
                 threads: int | None, meta_rate: Any, t0: float | None):
        self.fps, self.size, self.chunk_frames = fps, size, chunk_frames
        self.cap = np.inf if max_seconds is None else float(max_seconds)
        self.meta_rate, self.t0 = meta_rate, t0
        self.reformatter, self.threads = VideoReformatter(), sws_threads(threads)
        self.out: list[np.ndarray] = []  # frames not yet handed out
        self.prev: Any = None  # the latest decoded frame (pts <= next target)
        self._prev_arr: tuple[Any, np.ndarray] | None = None  # a frame and its pixels
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.last_dur: float | None = None
        self.n_native = 0
        self.k = 0  # next target index
        self.covered = False  # max_seconds reached: decode no further

    def _emit(self, frame) -> None:
        if self._prev_arr is None or self._prev_arr[0] is not frame:
            self._prev_arr = (frame, to_rgb(frame, self.size, self.reformatter, self.threads))
        self.out.append(self._prev_arr[1])
        self.k += 1

    def _full_chunks(self) -> Iterator[np.ndarray]:
        n = self.chunk_frames
        while n and len(self.out) >= n:
            yield np.stack(self.out[:n])
            del self.out[:n]

    def _time(self, frame) -> float:
        """`frame`'s time from the stream's start (no timestamp: continue from the previous frame)."""
        t = frame.time
        if t is None:
            step = self.last_dur or (1.0 / float(self.meta_rate) if self.meta_rate else 0.04)
            return 0.0 if self.last_t is None else self.last_t + step
        if self.t0 is None:  # no stream start time: the first frame is time 0
            self.t0 = t
        return t - self.t0

    def add(self, frame) -> Iterator[np.ndarray]:
        """Take one decoded frame; yields the chunks it completes."""
        t = self._time(frame)
        self.first_t = t if self.first_t is None else self.first_t
        # every target strictly before this frame takes the previous frame
        while self.k / self.fps < min(t - _EPS, self.cap - _EPS):
            self._emit(self.prev if self.prev is not None else frame)
            yield from self._full_chunks()
        self.n_native += 1
        dur = _frame_seconds(frame)
        gap = None if self.last_t is None or t <= self.last_t else t - self.last_t
        self.last_dur = dur or gap or self.last_dur
        self.prev, self.last_t = frame, t
        self.covered = t >= self.cap - _EPS

    def finish(self) -> Iterator[np.ndarray]:
        """The targets up to the end of the last frame (at least one), then what is left."""
        if self.last_dur is None:
            self.last_dur = 1.0 / float(self.meta_rate) if self.meta_rate else 1.0 / self.fps
        end = min(self.cap, self.last_t + self.last_dur)
        while self.k / self.fps < end - _EPS:
            self._emit(self.prev)
            yield from self._full_chunks()
        if self.k == 0:  # e.g. a single frame after max_seconds: still give one frame
            self._emit(self.prev)
        if self.out:
            yield np.stack(self.out)
            self.out = []

    def source_fps(self) -> float:
        """The stream's own (average) frame rate: from metadata, else measured, else 0."""
        if self.meta_rate:
            return float(self.meta_rate)
        if self.n_native > 1 and self.last_t > self.first_t:
            return (self.n_native - 1) / (self.last_t - self.first_t)
        return 0.0

    def rotation(self) -> int:
        """Degrees counter-clockwise applied from the display matrix."""
        return 90 * rotation_steps(self.prev)
