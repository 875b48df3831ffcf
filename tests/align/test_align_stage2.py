"""Stage I used in stage II: aligned stores made once per (run, store), `stage1.run` in
train/predict, `extract --aligned RUN`, and stage-I runs reused when a config repeats."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from emi_ray.cli import app
from emi_ray.config import load_config

SETS = ["stage1.lr_max=3e-3", "stage1.lr_min=1e-5", "stage1.batch_size=32", "stage1.epochs=6", "stage1.dim=32"]
TINY2 = ["model.dim=32", "train.batch_size=16", "data.max_len=16", "model.fusion_layers=1",
         "model.audio_hidden=16", "train.lr_max=3e-3", "train.patience=0"]


@pytest.fixture(scope="module")
def stage1_run(media_lite, affect_corpus, tmp_path_factory):
    from emi_ray.align.aligned_store import pretrained_run

    cfg = load_config(None, [*SETS, f"stage1.corpus={affect_corpus}"])
    root = tmp_path_factory.mktemp("stage1-runs")
    return pretrained_run(cfg, media_lite[1], root), cfg, root


def test_pretrained_run_is_reused_for_a_repeated_config(stage1_run, media_lite, affect_corpus):
    from emi_ray.align.aligned_store import pretrained_run

    run, cfg, root = stage1_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["vision_r1"] > 3 * metrics["vision_chance_r1"], metrics
    stamp = (run / "heads.pt").stat().st_mtime_ns
    # two trials with the same stage1 config at once: one pretrains (or none), both get the same run
    got = []
    threads = [threading.Thread(target=lambda: got.append(pretrained_run(cfg, media_lite[1], root))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [run, run] and (run / "heads.pt").stat().st_mtime_ns == stamp
    other = load_config(None, [*SETS, f"stage1.corpus={affect_corpus}", "stage1.temperature=0.1"])
    assert pretrained_run(other, media_lite[1], root) != run
    assert sorted(p.name for p in root.iterdir() if p.is_dir()).__len__() == 2


def test_aligned_store_made_once_and_recorded(stage1_run, media_lite):
    from emi_ray.align.aligned_store import aligned_store, stage2_features
    from emi_ray.data.store import FeatureStore

    run, cfg, _ = stage1_run
    feats = media_lite[1]
    assert stage2_features(cfg, feats) == feats  # no stage1.run: the store itself
    cfg.stage1.run = str(run)
    out = stage2_features(cfg, feats)
    assert out.parent == run / "aligned"
    st = FeatureStore(out)
    assert st.manifest["aligned"]["modalities"] == ["video", "audio", "text"]
    assert st.dims() == {"video": 32, "audio": 32, "text": 32}
    assert st.manifest["aligned"]["splits"] == ["train", "valid"]  # training never maps (opens) test
    assert sorted(st.ids()) == sorted(FeatureStore(feats).ids(["train", "valid"]))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert aligned_store(feats, run) == out and (out / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_train_and_predict_through_stage1_run(stage1_run, media_lite, tmp_path):
    run = stage1_run[0]
    r = CliRunner().invoke(app, ["train", "--features", str(media_lite[1]), "--workers", "0", "--out",
                                 str(tmp_path / "t"), "--json", *sum([["--set", s] for s in
                                 [*TINY2, "train.epochs=6", f"stage1.run={run}"]], [])])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["mean_pearson"] > 0.2, m  # aligned lite features of 120 synthetic clips carry the signal
    cfg = load_config(tmp_path / "t" / "config.yaml")
    assert cfg.stage1.run == str(run) and cfg.data.features == str(media_lite[1].resolve())
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "t"), "--json"])
    assert r.exit_code == 0, r.output
    assert abs(json.loads(r.output)["mean_pearson"] - m["mean_pearson"]) < 0.05
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "t"), "--out", str(tmp_path / "preds.csv")])
    assert r.exit_code == 0, r.output
    from emi_ray.data.store import FeatureStore

    rows = (tmp_path / "preds.csv").read_text().splitlines()
    assert len(rows) == 1 + len(FeatureStore(media_lite[1]).ids("test"))


def test_extract_aligned(stage1_run, media_lite, tmp_path):
    from emi_ray.data.store import FeatureStore

    run = stage1_run[0]
    data = media_lite[0]
    out = tmp_path / "aligned"
    args = ["extract", str(data), "--out", str(out), "--preset", "lite", "--aligned", str(run)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    st = FeatureStore(out)
    assert st.manifest["aligned"]["run"] == str(run.resolve())
    assert st.dims()["video"] == 32 and FeatureStore(out / "unaligned").dims()["video"] == 256
    assert sorted(st.ids()) == sorted(FeatureStore(media_lite[1]).ids())
    r = CliRunner().invoke(app, args)  # re-run: nothing re-extracted, aligned store rebuilt
    assert r.exit_code == 0 and "0 done" in r.output, r.output
    assert sorted(FeatureStore(out).ids()) == sorted(st.ids())
    # a run trained on other encoders, a non-run, an unaligned store in the way: one clear line each
    r = CliRunner().invoke(app, ["extract", str(data), "--out", str(tmp_path / "x"), "--preset", "lite",
                                 "--aligned", str(tmp_path)])
    assert r.exit_code == 2 and "not a finished stage-I run" in r.output
    r = CliRunner().invoke(app, ["extract", str(data), "--out", str(media_lite[1].parent), "--preset", "lite",
                                 "--video-encoder", "none", "--audio-encoder", "none", "--text-encoder", "none",
                                 "--aligned", str(run)])
    assert r.exit_code == 2 and "its heads were trained on" in r.output, r.output


def test_extract_aligned_refuses_a_foreign_out_before_any_work(stage1_run, media_lite, tmp_path):
    """--aligned OUT that holds the user's files, or an unaligned store: one line, nothing extracted or
    touched (not even OUT/unaligned); --force adds the store beside the user's files."""
    run, data = stage1_run[0], media_lite[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    args = ["extract", str(data), "--preset", "lite", "--aligned", str(run), "--out"]
    r = CliRunner().invoke(app, [*args, str(mine)])
    assert r.exit_code == 2 and "not a feature store" in r.output and "notes.txt" in r.output, r.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    r = CliRunner().invoke(app, [*args, str(media_lite[1])])  # an unaligned store
    assert r.exit_code == 2 and "holds an unaligned feature store" in r.output, r.output
    assert not (media_lite[1] / "unaligned").exists()
    r = CliRunner().invoke(app, [*args, str(mine), "--force"])
    assert r.exit_code == 0, r.output
    assert (mine / "notes.txt").read_text() == "keep me\n" and (mine / "manifest.json").is_file()
