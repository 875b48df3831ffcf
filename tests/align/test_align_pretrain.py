"""A tiny stage-I run on a small synthetic affect corpus learns (recall@1 well above
chance), resumes from its checkpoint, and its heads map a feature store for stage II;
the heads' inputs are normalised with statistics of the training items only, saved in
the run and applied the same way when a store is mapped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emi_ray.config import load_config

SETS = ["train.workers=0", "stage1.lr_max=3e-3", "stage1.lr_min=1e-5", "stage1.batch_size=32",
        "stage1.restart_epochs=10"]


@pytest.fixture(scope="module")
def corpus(affect_corpus):
    return affect_corpus


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    from emi_ray.align.trainer import run_pretrain

    cfg = load_config(None, [*SETS, "stage1.epochs=4"])
    run_dir = tmp_path_factory.mktemp("runs") / "pre"
    run_pretrain(cfg, corpus, "both", run_dir=run_dir)
    cfg = load_config(run_dir / "config.yaml", ["stage1.epochs=10"])
    res = run_pretrain(cfg, None, run_dir=run_dir, resume=True)  # continues epochs 4..9
    return res


def test_pretrain_learns_and_resumes(run):
    epochs = [h["epoch"] for h in run.history]
    assert epochs == list(range(10))
    m = run.metrics
    for mod in ("vision", "audio"):
        assert m[f"{mod}_r1"] >= 5 * m[f"{mod}_chance_r1"], m
        assert m[f"{mod}_r5"] >= m[f"{mod}_r1"]
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    d = run.run_dir
    assert (d / "config.yaml").is_file() and (d / "history.csv").is_file()
    assert json.loads((d / "metrics.json").read_text())["epochs_run"] == 10
    st = torch.load(d / "heads.pt", weights_only=True)
    assert st["encoders"] == {"vision": "lite-video", "audio": "lite-audio", "text": "hash"}


def test_existing_run_needs_resume(run, corpus):
    from emi_ray.align.trainer import run_pretrain
    from emi_ray.errors import EmiError

    with pytest.raises(EmiError, match="pass --resume"):
        run_pretrain(load_config(None, SETS), corpus, run_dir=run.run_dir)


def _store(tmp_path):
    from emi_ray.data.store_writer import Row, StoreWriter

    rng = np.random.default_rng(0)
    mods = {"video": {"encoder": "lite-video", "dim": 256, "rate_hz": 5.0},
            "audio": {"encoder": "lite-audio", "dim": 128, "rate_hz": 10.0},
            "text": {"encoder": "bert", "dim": 8, "rate_hz": None}}
    w = StoreWriter(tmp_path / "in", mods)
    for i in range(6):
        w.add(Row(i, "train" if i < 4 else "valid", rng.random(6).astype(np.float32),
                  {"video": rng.standard_normal((3 + i, 256)).astype(np.float32),
                   "audio": rng.standard_normal((5, 128)).astype(np.float32),
                   "text": rng.standard_normal(8).astype(np.float32)}))
    w.close()
    return tmp_path / "in"


def _column(store, m, split="train"):
    rows = store.read(["id", m], split).sort_by("id").column(m).to_pylist()
    return [np.asarray(r, np.float32).reshape(-1, store.dims()[m]) for r in rows]


def _embed(heads, head, x):
    with torch.no_grad():
        return heads.embed(head, torch.from_numpy(x)).numpy() * np.sqrt(heads.dim)


def test_apply_heads_to_store(run, tmp_path):
    from emi_ray.align.apply import apply_heads, load_heads
    from emi_ray.data.store import FeatureStore

    rec = apply_heads(_store(tmp_path), run.run_dir, tmp_path / "out")
    assert rec["modalities"] == ["video", "audio"]  # text came from another encoder: copied as is
    assert rec["input_normalization"] == "zscore"
    out = FeatureStore(tmp_path / "out")
    assert out.manifest["aligned"]["run"] == str(run.run_dir.resolve())
    assert out.dims() == {"video": 256, "audio": 256, "text": 8}
    t = out.read(["id", "video_len", "text"], "train").sort_by("id")
    assert t.column("video_len").to_pylist() == [3, 4, 5, 6]
    assert sorted(out.ids()) == list(range(6))
    # each frame: the mean over the training clips' length (clip-mean heads), the run's saved
    # statistics, then the head, computed by hand
    from emi_ray.align.granularity import window_mean

    heads, st = load_heads(run.run_dir)
    norm = st["input_normalization"]
    assert st["granularity"] == "clip" and st["windows"] == {"vision": 1, "audio": 11}  # 1 s clips at 10 Hz
    assert rec["windows"] == st["windows"]
    src = FeatureStore(tmp_path / "in")
    for m, head in (("video", "vision"), ("audio", "audio")):
        mean, scale = (np.asarray(norm[k][head], np.float32) for k in ("mean", "scale"))
        for x, y in zip(_column(src, m)[:3], _column(out, m)[:3]):
            x = window_mean(x, st["windows"][head])
            np.testing.assert_allclose(y, _embed(heads, head, (x - mean) / scale), rtol=1e-4, atol=1e-4)
            assert not np.allclose(y, _embed(heads, head, x), atol=1e-2)  # the normalisation matters


def test_run_saves_training_statistics(run, corpus):
    from emi_ray.align.features import Encoders, corpus_features
    from emi_ray.align.corpus import load_corpus

    st = torch.load(run.run_dir / "heads.pt", weights_only=True)
    norm = st["input_normalization"]
    assert norm["mode"] == "zscore" and set(norm["mean"]) == {"vision", "audio", "text"}
    assert {m: len(v) for m, v in norm["scale"].items()} == st["in_dims"]
    c = load_corpus(corpus)
    data = {m: corpus_features(c, m, Encoders()) for m in ("vision", "audio")}
    for m in ("vision", "audio"):
        x, train = data[m]["x"], ~data[m]["valid"]
        np.testing.assert_allclose(norm["mean"][m], x[train].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm["scale"][m], x[train].std(0), rtol=1e-4, atol=1e-5)
    text = np.concatenate([data[m]["text"][~data[m]["valid"]] for m in ("vision", "audio")])
    np.testing.assert_allclose(norm["mean"]["text"], text.mean(0), rtol=1e-4, atol=1e-5)


def test_apply_heads_of_an_older_run_normalises_nothing(run, tmp_path):
    """A run saved before runs kept their input statistics (no key) maps raw features."""
    import shutil

    from emi_ray.align.apply import apply_heads, load_heads
    from emi_ray.data.store import FeatureStore

    old = tmp_path / "old"
    shutil.copytree(run.run_dir, old, ignore=shutil.ignore_patterns("aligned", "checkpoints"))
    st = torch.load(old / "heads.pt", weights_only=True)
    for k in ("input_normalization", "granularity", "windows", "direction"):
        del st[k]
    torch.save(st, old / "heads.pt")
    assert apply_heads(_store(tmp_path), old, tmp_path / "out")["input_normalization"] is None
    heads, _ = load_heads(old)
    src, out = FeatureStore(tmp_path / "in"), FeatureStore(tmp_path / "out")
    for m, head in (("video", "vision"), ("audio", "audio")):  # frame by frame, as such runs always were
        for x, y in zip(_column(src, m)[:2], _column(out, m)[:2]):
            np.testing.assert_allclose(y, _embed(heads, head, x), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def corpus_arrays(corpus):
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import Encoders, corpus_features

    c = load_corpus(corpus)
    return {m: corpus_features(c, m, Encoders()) for m in ("vision", "audio")}


def _pretrain(data, sets, epochs=1):
    """pretrain in this process; (best, the last checkpoint's state)."""
    from emi_ray.align.loop import pretrain
    from emi_ray.engine.checkpoints import STATE_FILE

    states = []

    def report(_m, d):
        states.append(torch.load(f"{d}/{STATE_FILE}", weights_only=True))

    best = pretrain(load_config(None, [*SETS, f"stage1.epochs={epochs}", *sets]), data, report, dim=64)
    return best, states[-1]


@pytest.mark.parametrize("mode", ["zscore", "robust"])
def test_statistics_come_from_training_items_only(corpus_arrays, mode):
    from emi_ray.align.input_stats import input_stats

    changed = {}
    for m, a in corpus_arrays.items():
        b = {k: v.copy() for k, v in a.items()}
        for k in ("x", "text"):
            b[k][b["valid"]] = b[k][b["valid"]] * 1000.0 + 77.0  # held-out items: wildly different
        changed[m] = b
    _, st = _pretrain(corpus_arrays, [f"data.normalize={mode}"])
    _, st2 = _pretrain(changed, [f"data.normalize={mode}"])
    a, b = st["input_normalization"], st2["input_normalization"]
    assert a["mode"] == mode and set(a["mean"]) == {"vision", "audio", "text"}
    assert a == b  # not one held-out value reached the statistics
    # ... which the same statistics over all items would have seen
    every = input_stats({m: {**v, "valid": np.zeros_like(v["valid"])} for m, v in changed.items()}, mode)
    for m in ("vision", "audio", "text"):
        assert not np.allclose(np.r_[a["mean"][m], a["scale"][m]], np.r_[every.mean[m], every.scale[m]], rtol=0.1)
    _, raw = _pretrain(corpus_arrays, ["data.normalize=none"])
    assert raw["input_normalization"] is None


def test_robust_statistics_clip_and_keep_constant_dims():
    from emi_ray.align.input_stats import input_stats

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6)).astype(np.float32) * [1, 2, 3, 4, 5, 6] + 10
    x[:, 5] = 3.0  # constant: centred only
    x[7, 0] = 1e4  # an outlier item
    valid = np.zeros(400, bool)
    valid[-50:] = True
    norm = input_stats({"vision": {"x": x, "text": x.copy(), "valid": valid}}, "robust")
    assert norm.constant == {"vision": 1, "text": 1} and norm.scale["vision"][5] == 1.0
    y = norm.apply("vision", x)
    assert y.max() == 5.0 and abs(float(y[:, 5].max())) < 1e-6
    np.testing.assert_allclose(norm.mean["vision"][:5], np.median(x[~valid, :5], 0), rtol=1e-5)


def test_normalisation_undoes_loud_dimensions(corpus_arrays):
    """Three dimensions 50x louder than the rest (as in real CLIP / wav2vec2 features) swamp the
    heads' LayerNorm; standardised inputs do not care. (Measured, 10 epochs, 5 seeds, mean
    held-out recall@1 vision / audio: zscore 0.24 / 0.14 with or without the loud dims, none
    0.17 / 0.11 without and 0.07 / 0.09 with them; chance 0.02.)"""
    loud = {}
    for m, a in corpus_arrays.items():
        loud[m] = b = {k: v.copy() for k, v in a.items()}
        for k in ("x", "text"):
            b[k][:, [3, 10, 20]] *= 50.0

    def r1(mode):
        return float(np.mean([_pretrain(loud, [f"data.normalize={mode}", f"train.seed={s}"], epochs=10)[0]["score"]
                              for s in range(3)]))

    raw, z = r1("none"), r1("zscore")
    assert z >= 1.5 * raw and z - raw >= 0.04, (z, raw)


def test_cli_bad_corpus_one_line(tmp_path):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    (tmp_path / "affect.csv").write_text("path,modality\n")
    res = CliRunner().invoke(app, ["pretrain", "--affect", str(tmp_path), "--workers", "0"])
    assert res.exit_code == 2
    assert "affect.csv: header lacks column" in res.output
