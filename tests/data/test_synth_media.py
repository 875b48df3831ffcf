"""The synthetic media renderer: real files whose pictures and sound carry the labels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from emi_ray.data.synth import ClipSpec, make_specs  # noqa: E402
from emi_ray.data.synth_media import render_audio, render_clip, render_frames  # noqa: E402

FPS = 10
SIZE = 64


def spec(labels=(0.8,) * 6, corrupt=None, seed=7, duration=3.0, onset=0.5, offset=0.8):
    return ClipSpec(
        vid=1,
        split="train",
        labels=np.asarray(labels, np.float32),
        duration=duration,
        onset=onset,
        offset=offset,
        corrupt=corrupt,
        seed=seed,
    )


def read_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return np.stack(frames).astype(np.float32)


def read_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])


def window_masks(s: ClipSpec, n: int):
    u = np.arange(n) / FPS / s.duration
    inside = (u > s.onset + 0.06) & (u < s.offset - 0.01)
    before = u < s.onset - 0.06
    return inside, before


def test_render_writes_h264_aac_mp4(tmp_path):
    s = spec()
    out = tmp_path / "00001.mp4"
    render_clip(s, out)
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.format.name == "yuv420p"
        assert (v.width, v.height) == (SIZE, SIZE)
        assert a.codec_context.name == "aac" and a.sample_rate == 16000 and a.channels == 1
        assert c.duration / av.time_base == pytest.approx(s.duration, abs=0.15)
    assert len(read_frames(out)) == round(s.duration * FPS)
    assert len(read_audio(out)) == pytest.approx(s.duration * 16000, rel=0.05)
    assert [p.name for p in tmp_path.iterdir()] == ["00001.mp4"]  # no temp file left


def test_render_specs_from_make_specs(tmp_path):
    for s in make_specs(3, seed=1):
        render_clip(s, tmp_path / f"{s.vid:05d}.mp4")
        assert len(read_frames(tmp_path / f"{s.vid:05d}.mp4")) == round(s.duration * FPS)


def test_deterministic(tmp_path):
    s = spec(corrupt="video")
    assert np.array_equal(render_frames(s), render_frames(s))
    assert np.array_equal(render_audio(s), render_audio(s))
    render_clip(s, tmp_path / "a.mp4")
    render_clip(s, tmp_path / "b.mp4")
    assert np.array_equal(read_frames(tmp_path / "a.mp4"), read_frames(tmp_path / "b.mp4"))


def test_corrupt_audio_is_near_silent(tmp_path):
    render_clip(spec(), tmp_path / "clean.mp4")
    render_clip(spec(corrupt="audio"), tmp_path / "silent.mp4")
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    assert rms(read_audio(tmp_path / "silent.mp4")) < 0.05 * rms(read_audio(tmp_path / "clean.mp4"))


def test_corrupt_video_occludes_the_face(tmp_path):
    render_clip(spec(corrupt="video"), tmp_path / "occluded.mp4")
    render_clip(spec(), tmp_path / "clean.mp4")
    face = slice(SIZE // 4, 3 * SIZE // 4)
    occluded = read_frames(tmp_path / "occluded.mp4")[:, face, face]
    clean = read_frames(tmp_path / "clean.mp4")[:, face, face]
    roughness = lambda x: float(np.abs(np.diff(x, axis=2)).mean())  # noqa: E731
    assert roughness(occluded) > 4 * roughness(clean)  # noise where the face was
    assert abs(occluded.mean() - 128) < 10  # a grey block


def test_emotion_shows_inside_the_window(tmp_path):
    s = spec(labels=(0.3, 0.9, 0.2, 0.0, 0.8, 0.9))  # a joyful clip
    render_clip(s, tmp_path / "c.mp4")
    face = read_frames(tmp_path / "c.mp4")[:, SIZE // 4 : 7 * SIZE // 8, SIZE // 4 : 3 * SIZE // 4]
    change = np.abs(face - face[0]).mean(axis=(1, 2, 3))  # head motion + noise + expression
    inside, before = window_masks(s, len(face))
    assert change[inside].mean() > 2 * change[before].mean()
    assert change[inside].min() > change[before].max()


def test_joy_changes_the_mouth_during_the_window(tmp_path):
    happy = spec(labels=(0, 0, 0, 0, 0, 1.0))
    neutral = spec(labels=(0, 0, 0, 0, 0, 0.0))
    render_clip(happy, tmp_path / "happy.mp4")
    render_clip(neutral, tmp_path / "neutral.mp4")
    diff = np.abs(read_frames(tmp_path / "happy.mp4") - read_frames(tmp_path / "neutral.mp4"))
    mouth = diff[:, int(0.62 * SIZE) : int(0.88 * SIZE), int(0.3 * SIZE) : int(0.7 * SIZE)].mean(
        axis=(1, 2, 3)
    )
    eyes = diff[:, int(0.2 * SIZE) : int(0.45 * SIZE), int(0.25 * SIZE) : int(0.75 * SIZE)].mean(
        axis=(1, 2, 3)
    )
    inside, before = window_masks(happy, len(diff))
    assert mouth[inside].mean() > 3 * mouth[before].mean()
    assert mouth[inside].mean() > 3 * eyes[inside].mean()
    assert mouth[inside].mean() > 3.0  # grey levels


def test_pitch_follows_excitement_and_joy():
    s = spec(labels=(0, 0, 0, 0, 1.0, 1.0))
    x = render_audio(s)
    sr = 16000

    def f0(a: float, b: float) -> float:
        seg = x[int(a * s.duration * sr) : int(b * s.duration * sr)]
        spec_ = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        freqs = np.fft.rfftfreq(len(seg), 1 / sr)
        return float(freqs[np.argmax(spec_)])

    assert f0(0.05, 0.4) == pytest.approx(150 + 200 * 2 * 0.1, abs=15)
    assert f0(s.onset + 0.06, s.offset - 0.01) == pytest.approx(550, abs=15)


def test_render_mp3_is_audio_only(tmp_path):
    if "libmp3lame" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no libmp3lame encoder")
    render_clip(spec(), tmp_path / "00001.mp3")
    with av.open(str(tmp_path / "00001.mp3")) as c:
        assert not c.streams.video and len(c.streams.audio) == 1
    assert len(read_audio(tmp_path / "00001.mp3")) == pytest.approx(3.0 * 16000, rel=0.05)


def test_render_is_fast(tmp_path):
    s = spec()
    render_clip(s, tmp_path / "warm.mp4")
    t = time.perf_counter()
    render_clip(s, tmp_path / "timed.mp4")
    assert time.perf_counter() - t < 0.5  # ~0.06 s on a laptop core; loose for busy CI
