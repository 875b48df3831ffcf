"""The ridge baseline: agrees with scikit-learn, learns the synthetic signal, writes a run that
predicts, never reads the test split while fitting, its CLI, and its per-store cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from emi_ray.data.store import FeatureStore
from emi_ray.data.store_writer import Row, StoreWriter
from emi_ray.errors import EmiError, StoreError
from emi_ray.metrics import mean_pearson
from emi_ray.train import baseline as bl
from emi_ray.train.ridge import DEFAULT_ALPHAS, RidgePath

# Measured on the 400-clip synth_store (seed 0): validation mean r 0.287 (λ = 1000).
FLOOR = 0.13
REALISM_FLOOR = 0.06  # measured 0.121 on the 400-clip realism store (default: 0.287)


def test_matches_sklearn_ridge_and_pools_by_time(synth_store):
    from sklearn.linear_model import Ridge

    lam = 50.0
    model = bl.fit_baseline(synth_store, alphas=[lam])
    assert model.alpha == lam and model.modalities == ["video", "audio", "text"]
    train = bl.pooled_features(synth_store, "train")
    x = bl.standardise(train.x, *bl.column_stats(train.x))
    assert x.shape == (200, 384 + 768 + 256)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-9)
    ref = Ridge(alpha=lam).fit(x, train.labels.astype(np.float64))
    np.testing.assert_allclose(model.coef, ref.coef_.T, atol=1e-6)
    np.testing.assert_allclose(model.intercept, ref.intercept_, atol=1e-6)
    valid = bl.pooled_features(synth_store, "valid")
    # the path itself, on an uncentred matrix: the intercept is not penalised
    raw = np.hstack([train.x[:, :50] * 3 + 5, train.x[:, -20:]])
    coef, intercept = RidgePath(raw, train.labels).coef(lam)
    ref_raw = Ridge(alpha=lam).fit(raw, train.labels.astype(np.float64))
    np.testing.assert_allclose(coef, ref_raw.coef_.T, atol=1e-6)
    np.testing.assert_allclose(intercept, ref_raw.intercept_, atol=1e-6)
    np.testing.assert_allclose(model.predict(valid.x), ref.predict(bl.standardise(valid.x, model.mean, model.std)),
                               atol=1e-6)

    # pooling: the helper's row equals a direct per-row numpy mean over time of the stored sequence
    t = FeatureStore(synth_store).read(["id", "video", "audio", "text"], "train").sort_by("id")
    for j in (0, 57, 199):
        assert t.column("id")[j].as_py() == train.ids[j]
        direct = [np.asarray(t.column("video")[j].as_py(), np.float32).reshape(-1, 384).mean(axis=0),
                  np.asarray(t.column("audio")[j].as_py(), np.float32).reshape(-1, 768).mean(axis=0),
                  np.asarray(t.column("text")[j].as_py(), np.float32)]
        np.testing.assert_allclose(train.x[j], np.concatenate(direct), rtol=1e-5, atol=1e-6)


def _tiny_store(root, splits: dict[str, int], missing_video: set[int] = frozenset()):
    """A store with video (T, 3) and text (2,) features; ids in `missing_video` lack video."""
    rng = np.random.default_rng(0)
    w = StoreWriter(root, {"video": {"encoder": "t", "dim": 3, "rate_hz": None},
                           "text": {"encoder": "t", "dim": 2, "rate_hz": None}})
    vid = 0
    for split, n in splits.items():
        for _ in range(n):
            feats = {"text": rng.normal(size=2).astype(np.float32)}
            if vid not in missing_video:
                feats["video"] = rng.normal(size=(int(rng.integers(1, 6)), 3)).astype(np.float32)
            labels = None if split == "test" else rng.uniform(size=6).astype(np.float32)
            w.add(Row(vid, split, labels, feats))
            vid += 1
    w.close()
    return root


def test_missing_modality_is_filled_with_the_training_mean(tmp_path):
    store = _tiny_store(tmp_path / "f", {"train": 12, "valid": 4}, missing_video={1, 5, 13})
    train = bl.pooled_features(store, "train")
    assert np.isnan(train.x[[1, 5], :3]).all() and not np.isnan(train.x[:, 3:]).any()
    mean, std = bl.column_stats(train.x)
    np.testing.assert_allclose(mean[:3], np.nanmean(train.x[:, :3], axis=0))
    np.testing.assert_allclose(std[:3], np.nanstd(train.x[:, :3], axis=0))
    x = bl.standardise(train.x, mean, std)
    assert (x[[1, 5], :3] == 0).all()
    model = bl.fit_baseline(store, folds=3)
    valid = bl.pooled_features(store, "valid")
    assert np.isfinite(model.predict(valid.x)).all()
    # the missing valid row predicts as if its video were the training mean
    filled = valid.x.copy()
    filled[1, :3] = mean[:3]
    np.testing.assert_allclose(model.predict(valid.x)[1], model.predict(filled)[1])


@pytest.mark.parametrize("world", ["default", "realism"])
def test_cv_picks_alpha_from_grid_and_learns(world, request):
    synth_store = request.getfixturevalue("synth_store" if world == "default" else "realism_store")
    model = bl.fit_baseline(synth_store)
    assert model.alpha in DEFAULT_ALPHAS and len(model.cv_scores) == len(DEFAULT_ALPHAS)
    assert model.cv_mean_pearson == pytest.approx(model.cv_scores.max())
    assert model.cv_scores.max() > model.cv_scores.min()  # λ matters, so the choice is a choice
    metrics = bl.validation_metrics(synth_store, model)
    assert metrics["mean_pearson"] > {"default": FLOOR, "realism": REALISM_FLOOR}[world], metrics
    assert set(metrics["per_emotion"]) == {"Admiration", "Amusement", "Determination", "Empathic Pain",
                                           "Excitement", "Joy"}
    audio_only = bl.fit_baseline(synth_store, ["audio"])
    assert audio_only.modalities == ["audio"] and audio_only.coef.shape == (768, 6)


def test_run_dir_and_predict_reproduce_metrics(synth_store, tmp_path):
    run = tmp_path / "run"
    res = bl.run_baseline(synth_store, run, folds=4, seed=1)
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["kind"] == "baseline" and cfg["folds"] == 4 and cfg["seed"] == 1
    assert cfg["modalities"] == ["video", "audio", "text"] and len(cfg["alphas"]) == len(DEFAULT_ALPHAS)
    assert metrics["kind"] == "baseline" and res["run_dir"] == str(run)
    assert {"mean_pearson", "per_emotion", "alpha", "cv_mean_pearson"} <= set(metrics)
    assert bl.is_baseline_run(run) and not bl.is_baseline_run(tmp_path)

    ids, pred = bl.predict_baseline_split(run, split="valid")  # features from config.yaml
    lab_ids, labels = FeatureStore(synth_store).labels("valid")
    assert np.array_equal(ids, lab_ids) and pred.min() >= 0 and pred.max() <= 1
    assert mean_pearson(pred, labels)["mean_pearson"] == pytest.approx(metrics["mean_pearson"], abs=1e-9)
    test_ids, test_pred = bl.predict_baseline_split(run, synth_store, split="test")
    assert list(test_ids) == sorted(FeatureStore(synth_store).ids("test")) and test_pred.shape == (100, 6)

    loaded = bl.BaselineModel.load(run / "baseline.npz")
    assert loaded.alpha == metrics["alpha"] and loaded.dims == {"video": 384, "audio": 768, "text": 256}
    with pytest.raises(EmiError, match="run directory exists"):
        bl.run_baseline(synth_store, run)
    with pytest.raises(EmiError, match="not a baseline run"):
        bl.predict_baseline_split(tmp_path)


def test_fit_never_reads_test_shards(synth_store, tmp_path):
    copy = tmp_path / "features"
    shutil.copytree(synth_store, copy)
    test_shards = sorted((copy / "shards").glob("test-*.parquet"))
    assert test_shards
    for p in test_shards:
        p.write_bytes(b"not parquet " * 100)
    res = bl.run_baseline(copy, tmp_path / "run")
    reference = bl.fit_baseline(synth_store)
    assert res["alpha"] == reference.alpha
    assert res["mean_pearson"] == pytest.approx(bl.validation_metrics(synth_store, reference)["mean_pearson"])
    bl.predict_baseline_split(tmp_path / "run", split="valid")
    with pytest.raises(StoreError, match=r"test-\d+\.parquet: not a readable Parquet shard"):
        bl.predict_baseline_split(tmp_path / "run", split="test")


def test_user_errors(tmp_path):
    few = _tiny_store(tmp_path / "few", {"train": 3, "valid": 3})
    with pytest.raises(StoreError, match="3 training clips, fewer than the 5 CV folds"):
        bl.fit_baseline(few)
    no_train = _tiny_store(tmp_path / "notrain", {"valid": 4})
    with pytest.raises(StoreError, match="0 training clips"):
        bl.fit_baseline(no_train)
    no_valid = _tiny_store(tmp_path / "novalid", {"train": 10, "test": 3})
    with pytest.raises(StoreError, match="no valid split"):
        bl.run_baseline(no_valid, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(StoreError, match="has no \\['audio'\\] features"):
        bl.fit_baseline(few, ["audio"])


def test_cli(synth_store, tmp_path):
    from emi_ray.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["baseline", "--features", str(synth_store), "--out", str(tmp_path / "run"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["mean_pearson"] > FLOOR and res["run_dir"] == str(tmp_path / "run")

    r = runner.invoke(app, ["baseline", "--features", str(synth_store), "--modalities", "audio,text",
                            "--folds", "3", "--out", str(tmp_path / "run2")])
    assert r.exit_code == 0, r.output
    assert "validation mean r" in r.stdout and "Joy" in r.stdout and "next: emi-ray predict" in r.stdout

    r = runner.invoke(app, ["baseline", "--features", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "nowhere" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["baseline", "--features", str(synth_store), "--modalities", "nope",
                            "--out", str(tmp_path / "run3")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "nope" in r.output


def test_cached_baseline_computes_once(synth_store, tmp_path, monkeypatch):
    monkeypatch.setenv("EMI_RAY_HOME", str(tmp_path / "home"))
    first = bl.cached_baseline(synth_store, ["audio", "video"])
    cached = list((tmp_path / "home" / "cache" / "baseline").glob("*.json"))
    assert len(cached) == 1 and first["modalities"] == ["video", "audio"]

    def boom(*a, **k):
        raise AssertionError("cached_baseline refitted instead of reading its cache")

    monkeypatch.setattr(bl, "fit_baseline", boom)
    assert bl.cached_baseline(synth_store, ["video", "audio"]) == first
    with pytest.raises(AssertionError, match="refitted"):  # another modality set is another entry
        bl.cached_baseline(synth_store, ["audio"])
