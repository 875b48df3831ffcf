"""PyAV decoding: time-based resampling, audio, damaged files, rotation, mp3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from emi_ray.data.synth import ClipSpec  # noqa: E402
from emi_ray.data.synth_media import render_clip, render_frames, write_media  # noqa: E402
from emi_ray.errors import InputError  # noqa: E402
from emi_ray.extract.decode import VideoFrames, decode_audio, decode_video, iter_video, probe  # noqa: E402

SR = 16000


def spec(duration=3.0, seed=3):
    return ClipSpec(
        vid=1,
        split="train",
        labels=np.array([0.3, 0.9, 0.2, 0.0, 0.8, 0.9], np.float32),
        duration=duration,
        onset=0.5,
        offset=0.8,
        corrupt=None,
        seed=seed,
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 3 s clip, 64x64 at 10 fps, with 16 kHz AAC audio."""
    path = tmp_path_factory.mktemp("media") / "00001.mp4"
    render_clip(spec(), path)
    return path


BITS = 7


def indexed_frames(n: int) -> np.ndarray:
    """Frames whose index is written as 7 black/white stripes (binary), to see which was picked."""
    assert n < 2**BITS
    bits = (np.arange(n)[:, None] >> np.arange(BITS)) & 1  # (n, BITS)
    stripes = np.repeat(bits * 255, 8, axis=1).astype(np.uint8)  # (n, 8 * BITS)
    return np.ascontiguousarray(np.broadcast_to(stripes[:, None, :, None], (n, 16, 8 * BITS, 3)))


def picked(v: VideoFrames) -> np.ndarray:
    """Read back the native index of each decoded frame (decode with size=None)."""
    centers = v.frames[:, 8, 4::8, 1] > 128  # (T, BITS)
    return (centers * (1 << np.arange(BITS))).sum(1)


def test_resamples_by_time(clip):
    v = decode_video(clip, fps=5, size=32)
    assert abs(len(v.frames) - 15) <= 1
    assert v.frames.shape[1:] == (32, 32, 3) and v.frames.dtype == np.uint8
    np.testing.assert_allclose(np.diff(v.times), 0.2)
    assert v.times[0] == 0.0
    assert v.source_fps == pytest.approx(10.0)


def test_native_fps_matches_rendered_frames(clip):
    v = decode_video(clip, fps=10, size=None)
    rendered = render_frames(spec()).astype(np.float32)
    assert v.frames.shape == rendered.shape
    err = np.abs(v.frames.astype(np.float32) - rendered).mean(axis=(1, 2, 3))
    assert err.max() < 5.0  # codec error (mostly the pixel noise smoothed away)
    shifted = np.abs(v.frames[20:].astype(np.float32) - rendered[15:-5]).mean(axis=(1, 2, 3))
    assert shifted.mean() > err[20:].mean() + 1.0  # and frame k is rendered frame k


def test_thirty_fps_clip(tmp_path):
    path = tmp_path / "thirty.mp4"
    write_media(path, indexed_frames(60), fps=30)  # 2 s
    v = decode_video(path, fps=5, size=None)
    assert len(v.frames) == 10
    assert v.source_fps == pytest.approx(30.0)
    # target k / 5 s is native frame 6 k at 30 fps
    np.testing.assert_array_equal(picked(v), 6 * np.arange(10))


def test_variable_frame_rate_takes_latest_frame_at_or_before_target(tmp_path):
    rng = np.random.default_rng(0)
    # a burst 1 ms apart (1000 fps locally), then irregular 20-150 ms gaps up to ~3 s
    times = [0.0, 0.001, 0.002]
    while times[-1] < 2.9:
        times.append(round(times[-1] + rng.uniform(0.02, 0.15), 3))
    times = np.array(times)
    path = tmp_path / "vfr.mp4"
    write_media(path, indexed_frames(len(times)), frame_times=times)
    v = decode_video(path, fps=5, size=None)
    end = times[-1] + (times[-1] - times[-2])  # the last frame lasts as long as the gap before it
    assert abs(len(v.frames) - int(np.ceil(end * 5))) <= 1
    expected = [np.searchsorted(times, t + 1e-9, side="right") - 1 for t in v.times]
    np.testing.assert_array_equal(picked(v), expected)


def test_audio_rate_and_length(clip):
    a = decode_audio(clip)
    assert a.dtype == np.float32 and a.ndim == 1
    assert len(a) == pytest.approx(3.0 * SR, rel=0.05)
    assert np.abs(a).max() <= 1.0 and np.abs(a).max() > 0.05
    a8 = decode_audio(clip, sample_rate=8000)
    assert len(a8) == pytest.approx(3.0 * 8000, rel=0.05)


def test_audio_pitch_survives_the_codec(clip):
    a = decode_audio(clip)
    seg = a[int(0.6 * 3 * SR) : int(0.75 * 3 * SR)]  # inside the window: f0 = 150 + 200 * 1.7
    freqs = np.fft.rfftfreq(len(seg), 1 / SR)
    f0 = freqs[np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg)))))]
    assert f0 == pytest.approx(150 + 200 * (0.8 + 0.9), abs=15)


def test_max_seconds_caps_video_and_audio(clip):
    v = decode_video(clip, fps=5, size=16, max_seconds=1.0)
    assert len(v.frames) == 5 and v.times[-1] < 1.0
    assert len(decode_audio(clip, max_seconds=1.0)) == SR
    assert len(decode_video(clip, fps=5, size=16, max_seconds=100).frames) == 15


def test_size_and_center_crop(tmp_path):
    frames = np.zeros((4, 48, 96, 3), np.uint8)  # wide: 96 x 48
    frames[:, :, :24] = 250  # white on the left quarter, cropped away by a center square
    path = tmp_path / "wide.mp4"
    write_media(path, frames, fps=4)
    v = decode_video(path, fps=4, size=24)
    assert v.frames.shape == (4, 24, 24, 3)
    assert v.frames.max() < 40
    assert decode_video(path, fps=4, size=None).frames.shape == (4, 48, 96, 3)


def test_rotation_metadata_is_applied(tmp_path):
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    frames[:, :, :8, 0] = 250  # red strip on the left
    path = tmp_path / "rot.mp4"
    write_media(path, frames, fps=3, rotation=90)
    v = decode_video(path, fps=3, size=None)
    assert v.rotation == 90
    assert v.frames.shape == (3, 64, 32, 3)  # portrait after a quarter turn
    red = v.frames[0, :, :, 0].astype(float)
    assert red[-8:].mean() > 200 and red[:-8].mean() < 30  # counter-clockwise: left -> bottom


def test_no_audio_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    write_media(path, indexed_frames(10), fps=5)
    assert decode_audio(path) is None
    v = decode_video(path, fps=5, size=None)
    np.testing.assert_array_equal(picked(v), np.arange(10))
    assert probe(path)["has_audio"] is False


def test_no_video_stream(tmp_path):
    path = tmp_path / "voice.mp4"
    write_media(path, audio=np.zeros(SR, np.float32))
    with pytest.raises(InputError, match="no video stream") as e:
        decode_video(path)
    assert str(path) in str(e.value)
    assert len(decode_audio(path)) == pytest.approx(SR, rel=0.1)


@pytest.mark.parametrize("fn", [decode_video, decode_audio, probe])
def test_truncated_and_empty_files_raise(tmp_path, clip, fn):
    data = clip.read_bytes()
    cases = {
        "truncated.mp4": data[: len(data) // 2],  # the index (moov) is at the end: unreadable
        "empty.mp4": b"",
        "garbage.mp4": b"this is not a video\n" * 50,
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError) as e:
            fn(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
    with pytest.raises(InputError, match="not found"):
        fn(tmp_path / "missing.mp4")


def test_cut_mid_stream_gives_fewer_frames_deterministically(tmp_path, clip):
    # remux with the index first (faststart) so that a cut file still opens
    fast = tmp_path / "fast.mp4"
    faststart = {"movflags": "faststart"}
    with av.open(str(clip)) as src, av.open(str(fast), "w", options=faststart) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    v1, v2 = decode_video(cut, fps=5, size=16), decode_video(cut, fps=5, size=16)
    assert 1 <= len(v1.frames) < 15
    assert np.array_equal(v1.frames, v2.frames)
    a = decode_audio(cut)
    assert 0 < len(a) < 3 * SR
    assert np.array_equal(a, decode_audio(cut))


@pytest.mark.parametrize("size", [16, None])
def test_thread_counts_give_the_same_result(clip, size):
    """threads=1 (the pipeline's decode tasks) and 2 decode exactly what ffmpeg's default threading does."""
    ref = decode_video(clip, fps=5, size=size)
    for threads in (1, 2):
        v = decode_video(clip, fps=5, size=size, threads=threads)
        assert np.array_equal(v.frames, ref.frames) and np.array_equal(v.times, ref.times)
        assert np.array_equal(decode_audio(clip, threads=threads), decode_audio(clip))


def test_iter_video_streams_the_same_frames_in_chunks(clip):
    whole = decode_video(clip, fps=5, size=16)
    chunks = list(iter_video(clip, fps=5, size=16, chunk_frames=4))
    assert [len(c) for c in chunks[:-1]] == [4] * (len(chunks) - 1) and 1 <= len(chunks[-1]) <= 4
    assert np.array_equal(np.concatenate(chunks), whole.frames)
    assert len(list(iter_video(clip, fps=5, size=16))) == 1
    with pytest.raises(ValueError):
        next(iter_video(clip, chunk_frames=0))


def test_mp3(tmp_path):
    if "libmp3lame" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no libmp3lame encoder")
    path = tmp_path / "00001.mp3"
    render_clip(spec(), path)
    a = decode_audio(path)
    assert len(a) == pytest.approx(3.0 * SR, rel=0.05)
    assert len(decode_audio(path, max_seconds=0.5)) == SR // 2
    with pytest.raises(InputError, match="no video stream"):
        decode_video(path)


def test_probe(clip):
    info = probe(clip)
    assert info["has_video"] and info["has_audio"]
    assert info["duration"] == pytest.approx(3.0, abs=0.1)
    assert info["fps"] == pytest.approx(10.0)
    assert (info["width"], info["height"], info["sample_rate"]) == (64, 64, SR)


def test_bad_arguments(clip):
    with pytest.raises(ValueError):
        decode_video(clip, fps=0)
    with pytest.raises(ValueError):
        decode_audio(clip, max_seconds=-1)
