"""A tiny stage-I run on a small synthetic affect corpus learns (recall@1 well above
chance), resumes from its checkpoint, and its heads map a feature store for stage II."""

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


def test_apply_heads_to_store(run, tmp_path):
    from emi_ray.align.apply import apply_heads
    from emi_ray.data.store import FeatureStore, Row, StoreWriter

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
    rec = apply_heads(tmp_path / "in", run.run_dir, tmp_path / "out")
    assert rec["modalities"] == ["video", "audio"]  # text came from another encoder: copied as is
    out = FeatureStore(tmp_path / "out")
    assert out.manifest["aligned"]["run"] == str(run.run_dir.resolve())
    assert out.dims() == {"video": 256, "audio": 256, "text": 8}
    t = out.read(["id", "video_len", "text"], "train").sort_by("id")
    assert t.column("video_len").to_pylist() == [3, 4, 5, 6]
    assert sorted(out.ids()) == list(range(6))


def test_cli_bad_corpus_one_line(tmp_path):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    (tmp_path / "affect.csv").write_text("path,modality\n")
    res = CliRunner().invoke(app, ["pretrain", "--affect", str(tmp_path), "--workers", "0"])
    assert res.exit_code == 2
    assert "affect.csv: header lacks column" in res.output
