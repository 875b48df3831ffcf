"""Input normalisation: training-split statistics only, saved with the run, reused by predict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from emi_ray.data.dataset import FeatureDataset
from emi_ray.data.normalize import (ROBUST_CLIP, compute_stats, stored_stats, training_stats,
                                    write_store_stats)
from emi_ray.data.store import FeatureStore
from emi_ray.errors import StoreError

MODS = ["video", "audio", "text"]


def _spoil(store_dir, *splits):
    """Make the given splits' shards unreadable: tests run as root, so garbage instead of chmod."""
    for split in splits:
        for p in (store_dir / "shards").glob(f"{split}-*.parquet"):
            p.write_bytes(b"not a parquet file")


@pytest.fixture
def copied_store(synth_store, tmp_path):
    dst = tmp_path / "features"
    shutil.copytree(synth_store, dst)
    return dst


def _clip_means(store, split, modality):
    ds = FeatureDataset(store, split, [modality], max_len=10_000)
    return np.stack([np.atleast_2d(ds[i][modality]).astype(np.float64).mean(0)
                     for i in range(len(ds)) if ds[i][modality] is not None])


def test_zscore_statistics_are_per_clip_means_of_the_train_split(synth_store):
    norm = compute_stats(synth_store, MODS, "zscore")
    means = _clip_means(synth_store, "train", "audio")
    np.testing.assert_allclose(norm.mean["audio"], means.mean(0), rtol=1e-5, atol=1e-6)
    assert norm.clips == len(FeatureStore(synth_store).ids("train"))
    ds = FeatureDataset(synth_store, "train", ["audio"], max_len=10_000, normalization=norm)
    frames = np.concatenate([ds[i]["audio"] for i in range(len(ds))])
    assert abs(frames.mean()) < 0.05 and 0.9 < frames.std() < 1.1


def test_statistics_never_read_valid_or_test_shards(synth_store, copied_store):
    _spoil(copied_store, "valid", "test")
    for mode in ("zscore", "robust"):
        a, b = compute_stats(copied_store, MODS, mode), compute_stats(synth_store, MODS, mode)
        for m in MODS:
            np.testing.assert_array_equal(a.mean[m], b.mean[m])
            np.testing.assert_array_equal(a.scale[m], b.scale[m])


def test_kfold_statistics_use_only_the_training_ids(synth_store):
    ids = FeatureStore(synth_store).ids("train")[:50]
    norm = compute_stats(synth_store, ["audio"], "zscore", split="train", ids=ids)
    assert norm.clips == 50
    ds = FeatureDataset(synth_store, "train", ["audio"], max_len=10_000, ids=ids)
    means = np.stack([ds[i]["audio"].astype(np.float64).mean(0) for i in range(len(ds))])
    np.testing.assert_allclose(norm.mean["audio"], means.mean(0), rtol=1e-5, atol=1e-6)


def test_robust_mode_centres_on_the_median_and_clips(synth_store):
    norm = compute_stats(synth_store, ["video"], "robust")
    ds = FeatureDataset(synth_store, "train", ["video"], max_len=10_000, normalization=norm)
    frames = np.concatenate([ds[i]["video"] for i in range(len(ds))])
    assert np.abs(frames).max() <= ROBUST_CLIP
    assert np.abs(np.median(frames, axis=0)).mean() < 0.1


def test_constant_dimensions_are_only_centred_and_an_all_constant_modality_is_an_error(tmp_path):
    from emi_ray.data.store_writer import Row, StoreWriter

    rng = np.random.default_rng(0)
    w = StoreWriter(tmp_path / "s", {"video": {"encoder": "t", "dim": 4}, "text": {"encoder": "t", "dim": 3}})
    for i in range(12):
        v = rng.standard_normal((5, 4)).astype(np.float32)
        v[:, 2] = 7.0  # a constant dimension
        w.add(Row(vid=i + 1, split="train", labels=np.full(6, 0.2, np.float32),
                  features={"video": v, "text": np.full(3, 0.5, np.float32)}))
    w.close()
    norm = compute_stats(tmp_path / "s", ["video"], "zscore")
    assert norm.constant["video"] == 1 and norm.scale["video"][2] == 1.0 and norm.mean["video"][2] == 7.0
    with pytest.raises(StoreError, match="'text' has zero variance in all 3 dimensions"):
        compute_stats(tmp_path / "s", ["video", "text"], "zscore")


def test_a_store_without_a_train_split_is_an_error(copied_store):
    for p in (copied_store / "shards").glob("train-*.parquet"):
        p.unlink()
    with pytest.raises(StoreError, match="needs a train split"):
        compute_stats(copied_store, MODS, "zscore")


def test_stored_statistics_are_used_while_the_train_shards_are_unchanged(copied_store):
    written = write_store_stats(copied_store, "zscore")
    store = FeatureStore(copied_store)
    assert stored_stats(store, "zscore") is not None
    got = training_stats(copied_store, ["audio"], "zscore")
    np.testing.assert_array_equal(got.mean["audio"], written.mean["audio"])
    _spoil(copied_store, "train")  # stats come from the file, not from the (now unreadable) shards
    assert training_stats(copied_store, ["video"], "zscore").mean["video"].shape == (384,)
    extra = copied_store / "shards" / "train-99999.parquet"
    shutil.copy(next((copied_store / "shards").glob("valid-*.parquet")), extra)
    assert stored_stats(FeatureStore(copied_store), "zscore") is None  # train shards changed: stale


def test_predict_reuses_the_runs_saved_statistics_exactly(synth_store, copied_store, tmp_path):
    """A run's predictions do not depend on the train split of the store they are made from."""
    from emi_ray.config import load_config
    from emi_ray.train.predict import load_model, predict_split
    from emi_ray.train.trainer import run_training

    cfg = load_config(None, ["train.epochs=2", "train.workers=0", "model.dim=32", "model.fusion_heads=2"])
    res = run_training(cfg, synth_store, tmp_path / "run")
    _, _, norm = load_model(res.run_dir)
    expected = compute_stats(synth_store, MODS, "zscore")
    for m in MODS:
        np.testing.assert_array_equal(norm.mean[m], expected.mean[m])
    assert (res.run_dir / "normalization.json").is_file()
    ids_a, pred_a = predict_split(res.run_dir, synth_store, "valid")
    _spoil(copied_store, "train")
    ids_b, pred_b = predict_split(res.run_dir, copied_store, "valid")
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(pred_a, pred_b)


def test_info_stats_writes_and_prints_the_statistics(copied_store):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    res = CliRunner().invoke(app, ["info", str(copied_store), "--stats"])
    assert res.exit_code == 0, res.output
    assert (copied_store / "stats" / "zscore.json").is_file() and (copied_store / "stats" / "robust.json").is_file()
    assert "constant dims" in res.output


def test_whitening_decorrelates_the_training_features(realism_store):
    """Realism's person offsets concentrate variance in a few directions; whitened, they do not."""
    from emi_ray.data.normalize import Normalization

    norm = compute_stats(realism_store, ["video"], "whiten")
    z = compute_stats(realism_store, ["video"], "zscore")
    np.testing.assert_array_equal(norm.mean["video"], z.mean["video"])

    def top_share(n):
        ds = FeatureDataset(realism_store, "train", ["video"], max_len=10_000, normalization=n)
        frames = np.concatenate([ds[i]["video"] for i in range(len(ds))]).astype(np.float64)
        lam = np.linalg.eigvalsh(np.cov(frames, rowvar=False))
        return lam[-8:].sum() / lam.sum()

    shares = top_share(z), top_share(norm)
    assert shares[0] > 0.15  # z-scored: 8 of 384 directions hold a fifth of the variance
    assert shares[1] < shares[0] / 2
    back = Normalization.from_state(json.loads(json.dumps(norm.to_state())))  # JSON and weights_only-safe
    np.testing.assert_array_equal(back.whiten["video"], norm.whiten["video"])
