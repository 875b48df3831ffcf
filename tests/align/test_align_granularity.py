"""The stage-I heads see the same kind of input in training and in application (`stage1.granularity`):
a head trained on clip means is applied over windows of the training clips' length, a head trained
on frames frame by frame, so the inputs' statistics agree; per-frame application of a clip-mean head
(what runs did before) fails the same check. 20 ms frames (lite-audio, frame_seconds=0.02), as
wav2vec2's, make the gap plain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emi_ray.config import load_config

SETS = ["train.workers=0", "stage1.lr_max=3e-3", "stage1.lr_min=1e-5", "stage1.batch_size=32", "stage1.dim=32"]
FRAME_20MS = {"lite-audio": {"frame_seconds": 0.02}}


def test_window_mean_by_hand():
    from emi_ray.align.granularity import window_mean

    x = np.arange(10, dtype=np.float32).reshape(5, 2)  # rows (0,1) (2,3) (4,5) (6,7) (8,9)
    y = window_mean(x, 3)
    np.testing.assert_allclose(y[:, 0], [1, 2, 4, 6, 7])  # cut at the ends: (0+2)/2, ..., (6+8)/2
    np.testing.assert_array_equal(window_mean(x, 1), x)
    np.testing.assert_allclose(window_mean(x, 99), np.repeat(x.mean(0, keepdims=True), 5, 0))


@pytest.fixture(scope="module")
def audio_corpus(tmp_path_factory):
    from emi_ray.align.synth import write_affect_corpus

    root = tmp_path_factory.mktemp("affect-audio")
    write_affect_corpus(root, n=160, seed=5, modalities=("audio",))
    return root


@pytest.fixture(scope="module")
def runs(audio_corpus, tmp_path_factory):
    """One in-process stage-I run per granularity on the audio corpus (20 ms frames)."""
    from emi_ray.align.features import Encoders
    from emi_ray.align.trainer import run_pretrain

    enc = Encoders(options=FRAME_20MS)
    root = tmp_path_factory.mktemp("gran-runs")
    out = {}
    for g in ("clip", "frame"):
        cfg = load_config(None, [*SETS, "stage1.epochs=6", f"stage1.granularity={g}"])
        out[g] = run_pretrain(cfg, audio_corpus, "audio", enc, root / g, in_process=True)
    return out


@pytest.fixture(scope="module")
def recordings(audio_corpus):
    """Longer audio as a store holds it: the encoder's frames of five corpus clips played back to back."""
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import Encoders
    from emi_ray.extract.decode import decode_audio

    items = load_corpus(audio_corpus).of("audio")[:100]
    enc = Encoders(options=FRAME_20MS).create("audio")
    waves = [decode_audio(audio_corpus / it.path, 16000) for it in items]
    return [enc.encode([np.concatenate(waves[i : i + 5])])[0] for i in range(0, len(waves), 5)]


def _training_inputs(run, audio_corpus):
    """The audio head's inputs in training: clip means or frames of the training items, normalised."""
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import Encoders, corpus_features
    from emi_ray.align.granularity import frames_of
    from emi_ray.align.input_stats import from_state

    st = torch.load(run.run_dir / "heads.pt", weights_only=True)
    a = corpus_features(load_corpus(audio_corpus), "audio", Encoders(options=FRAME_20MS))
    train = np.flatnonzero(~a["valid"])
    x = a["x"][train] if st["granularity"] == "clip" else a["frames"][frames_of(a["offsets"], train)[0]]
    norm = from_state(st["input_normalization"])
    return norm.apply("audio", x), norm, st


def _agree(train_in: np.ndarray, applied: np.ndarray) -> tuple[float, float]:
    """(median per-dimension std ratio applied / training, mean |difference of means|)."""
    ratio = float(np.median(applied.std(0) / train_in.std(0)))
    return ratio, float(np.abs(applied.mean(0) - train_in.mean(0)).mean())


@pytest.mark.parametrize("granularity", ["clip", "frame"])
def test_inputs_at_application_match_training(runs, recordings, audio_corpus, granularity):
    from emi_ray.align.granularity import applied_inputs, from_heads

    run = runs[granularity]
    train_in, norm, st = _training_inputs(run, audio_corpus)
    got, windows = from_heads(st)
    assert got == granularity
    assert windows == {"audio": 51 if granularity == "clip" else 1}  # 1 s clips: 51 frames of 20 ms
    applied = np.concatenate([applied_inputs(r, norm, "audio", windows["audio"]) for r in recordings])
    ratio, shift = _agree(train_in, applied)
    assert 0.8 <= ratio <= 1.25 and shift < 0.3, (granularity, ratio, shift)
    if granularity == "clip":  # the check can fail: frame by frame, a clip-mean head sees 6x the spread
        ratio, _ = _agree(train_in, np.concatenate([applied_inputs(r, norm, "audio", 1) for r in recordings]))
        assert ratio > 3, ratio
    m = run.metrics
    assert m["audio_r1"] >= 3 * m["audio_chance_r1"], m  # both granularities learn


def _store(tmp_path, recordings):
    from emi_ray.data.store_writer import Row, StoreWriter

    w = StoreWriter(tmp_path / "in", {"audio": {"encoder": "lite-audio", "dim": 128, "rate_hz": 50.0}})
    for i, r in enumerate(recordings[:4]):
        w.add(Row(i, "train", np.zeros(6, np.float32), {"audio": r.astype(np.float32)}))
    w.close()
    return tmp_path / "in"


def _mapped(store):
    from emi_ray.data.store import FeatureStore

    s = FeatureStore(store)
    rows = s.read(["id", "audio"], "train").sort_by("id").column("audio").to_pylist()
    return [np.asarray(r, np.float32).reshape(-1, s.dims()["audio"]) for r in rows]


def test_apply_heads_uses_the_training_window_and_old_runs_stay_per_frame(runs, recordings, tmp_path):
    import shutil

    from emi_ray.align.apply import apply_heads, load_heads
    from emi_ray.align.granularity import applied_inputs
    from emi_ray.align.input_stats import from_state

    src = _store(tmp_path, recordings)
    run = runs["clip"].run_dir
    rec = apply_heads(src, run, tmp_path / "out")
    assert rec["granularity"] == "clip" and rec["windows"] == {"audio": 51}
    heads, st = load_heads(run)
    norm = from_state(st["input_normalization"])

    def by_hand(x, window):
        with torch.no_grad():
            return heads.embed("audio", torch.from_numpy(applied_inputs(x, norm, "audio", window))).numpy() * np.sqrt(
                heads.dim)

    for x, y in zip(recordings[:2], _mapped(tmp_path / "out")[:2]):
        np.testing.assert_allclose(y, by_hand(x, 51), rtol=1e-4, atol=1e-4)
    # a run saved before granularity was recorded: clip means, applied frame by frame as it always was
    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("aligned", "checkpoints"))
    st = torch.load(old / "heads.pt", weights_only=True)
    for k in ("granularity", "windows", "direction"):
        del st[k]
    torch.save(st, old / "heads.pt")
    rec = apply_heads(src, old, tmp_path / "out-old")
    assert rec["granularity"] == "clip" and rec["windows"] == {}
    for x, y in zip(recordings[:2], _mapped(tmp_path / "out-old")[:2]):
        np.testing.assert_allclose(y, by_hand(x, 1), rtol=1e-4, atol=1e-4)


def test_frame_granularity_refuses_fine_tuned_blocks():
    from emi_ray.align.head_inputs import Inputs
    from emi_ray.errors import EmiError

    with pytest.raises(EmiError, match="granularity=frame"):
        Inputs({"audio": {"states": np.zeros((2, 3, 4)), "lens": np.ones(2), "text_states": np.zeros((2, 3, 4)),
                          "text_lens": np.ones(2), "weight": np.ones(2)}}, {"audio": object()}, None, "frame")
