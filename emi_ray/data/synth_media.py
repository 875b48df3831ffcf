"""Render a synthetic `ClipSpec` as a small real media file (mp4: H.264 + AAC, or mp3).

The media carry the same labels and timing as the feature writer in `synth.py`: every
expression intensity below is a label times the clip's envelope e(t) =
`envelope(t / duration, onset, offset)` (1 inside [onset, offset], 0.1 elsewhere), so
the emotion shows mostly inside that window. With y = the six label fractions:

Video (size x size RGB, `fps` frames per second, numpy drawing only):
  * a face ellipse on a flat background, whose skin tint turns warm with
    Admiration * e(t) and bluish with Empathic Pain * e(t);
  * a mouth whose curvature is (Joy + 0.7 Amusement - Empathic Pain) * e(t)
    (corners up = smile, down = frown) and whose opening is
    (Excitement + Amusement) * e(t);
  * eyes that widen with Excitement * e(t) and narrow with Determination * e(t);
  * eyebrows whose inner ends drop (a frown of resolve) with Determination * e(t);
  * nuisance from the clip seed: slow random head motion (a sum of two sinusoids per
    axis, up to ~1 % of the frame) and Gaussian pixel noise (sigma 3 grey levels);
  * corrupt == "video": a grey noise block occludes most of the face.

Audio (mono, `sample_rate`): a voiced tone (four harmonics, a ~3.5 Hz syllable rhythm)
  * pitch f0(t) = 150 Hz + 200 Hz * (Excitement + Joy) * e(t);
  * loudness 0.12 + 0.5 * (Determination + Amusement) / 2 * e(t);
  * tremolo (6 Hz amplitude) and vibrato (5.5 Hz, +-12 Hz) of depth Empathic Pain * e(t);
  * white noise at 0.01; corrupt == "audio": near-silence (noise at 0.001 only).

Rendering is deterministic for a spec (numpy Generator seeded from `spec.seed`); the
encoded bytes may differ between library builds, the decoded content does not beyond
codec noise. `write_media` is the low-level writer (also used by tests to produce
odd or variable frame rates, rotation metadata and audio-only files).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from emi_ray.data.synth import ClipSpec, envelope
from emi_ray.io import atomic_path

ADM, AMU, DET, PAIN, EXC, JOY = range(6)

BACKGROUND = np.array([70.0, 92.0, 84.0])
SKIN = np.array([205.0, 165.0, 135.0])
WARM = np.array([40.0, 12.0, -30.0])
BLUE = np.array([-45.0, -10.0, 50.0])
EYE = np.array([35.0, 30.0, 40.0])
BROW = np.array([60.0, 40.0, 30.0])
LIPS = np.array([150.0, 45.0, 55.0])
MOUTH_INSIDE = np.array([45.0, 10.0, 18.0])


def _alpha(signed_dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed_dist, 0.0, 1.0)[..., None]


def _ellipse_dist(x, y, cx, cy, rx, ry):
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (r - 1.0) * min(rx, ry)


def _segment_dist(x, y, x1, y1, x2, y2, half_width):
    dx, dy = x2 - x1, y2 - y1
    t = np.clip(((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - (x1 + t * dx), y - (y1 + t * dy)) - half_width


def _paint(img: np.ndarray, dist: np.ndarray, color: np.ndarray) -> None:
    a = _alpha(dist)
    img *= 1.0 - a
    img += a * color


def render_frames(spec: ClipSpec, size: int = 64, fps: int = 10) -> np.ndarray:
    """The clip's video as uint8 (T, size, size, 3) RGB, T = round(duration * fps)."""
    rng = np.random.default_rng([spec.seed, 11])
    y = np.asarray(spec.labels, dtype=np.float64)
    n = max(1, int(round(spec.duration * fps)))
    t = np.arange(n) / fps
    env = envelope(t / spec.duration, spec.onset, spec.offset)
    s = float(size)
    # slow head motion: two sinusoids per axis, random frequencies and phases
    freq = rng.uniform(0.1, 0.45, (2, 2))
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    amp = rng.uniform(0.003, 0.006, (2, 2)) * s
    motion = (amp[..., None] * np.sin(2 * np.pi * freq[..., None] * t + phase[..., None])).sum(1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    bg = BACKGROUND + np.linspace(-10, 10, size)[:, None, None]  # vertical gradient
    bg = np.broadcast_to(bg, (size, size, 3))
    rx, ry = 0.28 * s, 0.36 * s
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        e = env[k]
        cx, cy = s / 2 + motion[0, k], s / 2 + motion[1, k]
        img = bg.copy()
        skin = SKIN + WARM * y[ADM] * e + BLUE * y[PAIN] * e
        _paint(img, _ellipse_dist(xx, yy, cx, cy, rx, ry), skin)
        # eyes and brows
        openness = float(np.clip(0.45 + 0.55 * y[EXC] * e - 0.3 * y[DET] * e, 0.12, 1.0))
        ew = 0.2 * rx
        eye_y = cy - 0.22 * ry
        slant = 0.14 * ry * y[DET] * e
        for side in (-1.0, 1.0):
            ex = cx + side * 0.42 * rx
            _paint(img, _ellipse_dist(xx, yy, ex, eye_y, ew, max(ew * openness, 0.6)), EYE)
            by = eye_y - ew - 0.08 * ry
            outer, inner = ex + side * ew * 1.1, ex - side * ew * 1.1
            _paint(img, _segment_dist(xx, yy, outer, by, inner, by + slant, 0.03 * ry), BROW)
        # mouth: a curved band; smile lifts the corners, opening widens the band
        mx, my, mw = cx, cy + 0.5 * ry, 0.45 * rx
        smile = float(np.clip((y[JOY] + 0.7 * y[AMU] - y[PAIN]) * e, -1.0, 1.0))
        opening = float(np.clip((y[EXC] + y[AMU]) * e, 0.0, 1.5))
        xn = (xx - mx) / mw
        line = my - smile * 0.22 * ry * (xn**2 - 0.5)
        taper = np.sqrt(np.clip(1.0 - xn**2, 0.0, 1.0))
        half_open = 0.12 * ry * opening * taper
        inside_x = (np.abs(xn) - 1.0) * mw  # signed distance to the mouth's x-extent
        band = np.maximum(np.abs(yy - line) - half_open - 0.035 * ry, inside_x)
        _paint(img, band, LIPS)
        if opening > 0.02:
            _paint(img, np.maximum(np.abs(yy - line) - half_open + 0.3, inside_x), MOUTH_INSIDE)
        if spec.corrupt == "video":
            lo, hi = int(0.14 * s), int(np.ceil(0.86 * s))
            img[lo:hi, lo:hi] = 128.0 + 40.0 * rng.standard_normal((hi - lo, hi - lo, 1))
        img += 3.0 * rng.standard_normal(img.shape)
        out[k] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def render_audio(spec: ClipSpec, sample_rate: int = 16000) -> np.ndarray:
    """The clip's audio as mono float32 in [-1, 1], round(duration * sample_rate) samples."""
    rng = np.random.default_rng([spec.seed, 12])
    y = np.asarray(spec.labels, dtype=np.float64)
    n = max(1, int(round(spec.duration * sample_rate)))
    t = np.arange(n) / sample_rate
    if spec.corrupt == "audio":
        return (0.001 * rng.standard_normal(n)).astype(np.float32)
    e = envelope(t / spec.duration, spec.onset, spec.offset)
    pain = y[PAIN] * e
    f0 = 150.0 + 200.0 * (y[EXC] + y[JOY]) * e + 12.0 * pain * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate + rng.uniform(0, 2 * np.pi)
    voice = sum(np.sin(h * phase) / h for h in range(1, 5)) / 2.1
    loud = 0.12 + 0.5 * 0.5 * (y[DET] + y[AMU]) * e
    syllable = 0.65 + 0.35 * np.abs(np.sin(np.pi * 3.5 * t + rng.uniform(0, np.pi)))
    tremolo = 1.0 - 0.5 * pain * (0.5 + 0.5 * np.sin(2 * np.pi * 6.0 * t))
    x = loud * syllable * tremolo * voice + 0.01 * rng.standard_normal(n)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def render_clip(
    spec: ClipSpec, path: Path, size: int = 64, fps: int = 10, sample_rate: int = 16000
) -> None:
    """Write `spec` as a real media file at `path` (atomically; see the module doc).

    `.mp4` (default): H.264 yuv420p video + AAC mono audio. `.mp3`: the audio only.
    """
    path = Path(path)
    audio = render_audio(spec, sample_rate)
    if path.suffix.lower() == ".mp3":
        write_media(path, audio=audio, sample_rate=sample_rate)
        return
    write_media(path, render_frames(spec, size, fps), audio, fps=fps, sample_rate=sample_rate)


def _check_media(path: Path, frames: np.ndarray | None, audio: np.ndarray | None) -> str:
    """The container format for `path`'s suffix, after checking what is to be written fits it."""
    fmt = {".mp4": "mp4", ".mp3": "mp3"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot write media with suffix {path.suffix!r}; use .mp4/.mp3")
    if fmt == "mp3" and frames is not None:
        raise ValueError(f"{path}: an .mp3 file holds audio only; drop the frames or use .mp4")
    if frames is None and audio is None:
        raise ValueError(f"{path}: nothing to write (no frames, no audio)")
    if frames is not None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            got = f"{frames.dtype} {frames.shape}"
            raise ValueError(f"{path}: frames must be uint8 (T, H, W, 3), got {got}")
        if frames.shape[1] % 2 or frames.shape[2] % 2:
            raise ValueError(f"{path}: yuv420p needs even frame sizes, got {frames.shape[1:3]}")
    return fmt


def _frame_pts(path: Path, n: int, fps: float, frame_times: np.ndarray | None) -> tuple[Fraction, np.ndarray]:
    """(time base, per-frame timestamps): k / fps, or the given times at millisecond resolution."""
    if frame_times is None:
        if fps == int(round(fps)):
            return Fraction(1, int(round(fps))), np.arange(n)
        return Fraction(1, 1000), np.round(np.arange(n) / fps * 1000).astype(np.int64)
    pts = np.round(np.asarray(frame_times, dtype=np.float64) * 1000).astype(np.int64)
    if len(pts) != n or np.any(np.diff(pts) <= 0):
        raise ValueError(f"{path}: frame_times must increase (ms steps), one per frame")
    return Fraction(1, 1000), pts


def _video_stream(out, frames: np.ndarray, fps: float, pts_base: Fraction, rotation: int | None):
    vstream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
    vstream.width, vstream.height = frames.shape[2], frames.shape[1]
    vstream.pix_fmt = "yuv420p"
    vstream.codec_context.time_base = pts_base
    # mbtree off: with it, x264's asm reads memory that varies between runs and
    # the same frames encode to (slightly) different pictures
    vstream.options = {"crf": "16", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
    if rotation:
        vstream.set_display_rotation(rotation)
    return vstream


def write_media(
    path: str | Path,
    frames: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    fps: float = 10,
    sample_rate: int = 16000,
    frame_times: np.ndarray | None = None,
    rotation: int | None = None,
) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames and/or mono float audio into `path`, atomically.

    The container follows the suffix: `.mp4` (libx264 yuv420p + AAC) or `.mp3`
    (libmp3lame, audio only). `frame_times` (seconds, increasing) gives each frame its
    own timestamp (variable frame rate, millisecond resolution); otherwise frame k is at
    k / fps. `rotation` stores a display-matrix rotation (degrees counter-clockwise).
    """
    path = Path(path)
    frames = None if frames is None else np.asarray(frames)
    fmt = _check_media(path, frames, audio)
    if frames is not None:
        pts_base, pts = _frame_pts(path, len(frames), fps, frame_times)
    audio = None if audio is None else np.asarray(audio, np.float32).reshape(-1)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=fmt) as out:
        vstream = None if frames is None else _video_stream(out, frames, fps, pts_base, rotation)
        astream = None
        if audio is not None:
            astream = out.add_stream("aac" if fmt == "mp4" else "libmp3lame", rate=sample_rate, layout="mono")
            astream.bit_rate = 64000

        def mux_audio(a: int, b: int) -> None:
            if astream is None or b <= a:
                return
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, a:b]), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = sample_rate, a, Fraction(1, sample_rate)
            out.mux(astream.encode(af))

        done = 0  # audio samples muxed so far: interleave audio with the video
        if vstream is not None:
            for frame, p in zip(frames, pts):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts, vf.time_base = int(p), pts_base
                out.mux(vstream.encode(vf))
                if audio is not None:
                    upto = min(len(audio), int(float(p * pts_base) * sample_rate))
                    mux_audio(done, upto)
                    done = max(done, upto)
            out.mux(vstream.encode(None))
        if astream is not None:
            mux_audio(done, len(audio))
            out.mux(astream.encode(None))
