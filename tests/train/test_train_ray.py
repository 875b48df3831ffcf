"""Ray Train end to end: the CLI, run directory, predict/evaluate, DDP with 2 workers."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emi_ray.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()
TINY = ["model.dim=16", "model.fusion_heads=2", "model.audio_hidden=8", "data.max_len=16",
        "model.dropout=0.0", "train.patience=0"]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from emi_ray.ray_env import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def sets(*items):
    return [a for it in items for a in ("--set", it)]


def test_train_cli_run_dir_predict_evaluate(ray_session, synth_data, synth_store, tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--features", str(synth_store), "--workers", "1", "--out", str(run),
                            "--json", *sets(*TINY, "train.epochs=3", "train.batch_size=16")])
    assert r.exit_code == 0, r.output
    for name in ("config.yaml", "metrics.json", "history.csv", "best.pt", "curve.png"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"mean_pearson", "per_emotion", "epoch"} and metrics["epochs_run"] == 3
    with (run / "history.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3

    r = runner.invoke(app, ["predict", str(run), "--out", str(tmp_path / "preds.csv")])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader((tmp_path / "preds.csv").open()))
    assert rows[0] == ["Filename", "Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy"]
    from emi_ray.data.store import FeatureStore

    ids = [int(x[0]) for x in rows[1:]]
    assert ids == sorted(FeatureStore(synth_store).ids("test"))
    values = np.array([[float(v) for v in x[1:]] for x in rows[1:]])
    assert values.min() >= 0 and values.max() <= 1

    r = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert json.loads(r.output)["mean_pearson"] == pytest.approx(metrics["mean_pearson"], abs=1e-5)

    # predictions of the valid split score the same through `emi-ray score`
    runner.invoke(app, ["predict", str(run), "--split", "valid", "--out", str(tmp_path / "v.csv")])
    r = runner.invoke(app, ["score", str(tmp_path / "v.csv"), str(synth_data / "valid_split.csv"), "--json"])
    assert json.loads(r.output)["mean_pearson"] == pytest.approx(metrics["mean_pearson"], abs=1e-4)

    r = runner.invoke(app, ["train", "--features", str(synth_store), "--out", str(run), "--workers", "0"])
    assert r.exit_code == 2 and "run directory exists; pass --resume" in r.output


def test_unknown_set_key_exit_2(synth_store):
    r = runner.invoke(app, ["train", "--features", str(synth_store), "--set", "model.dimm=3"])
    assert r.exit_code == 2
    assert "unknown config key 'model.dimm'; valid keys:" in r.output and "Traceback" not in r.output


def test_two_workers_match_one(ray_session, synth_store, tmp_path):
    """DDP on 2 CPU workers (gloo) with per-worker batch 8 = 1 worker with batch 16.

    Equal only for a loss that is a mean over samples and no per-rank randomness: the batch
    Pearson term and modality dropout (defaults) are pinned off here."""
    from emi_ray.config import Config, apply_overrides
    from emi_ray.train.loop import fit
    from emi_ray.train.trainer import run_training

    exact = [*TINY, "train.loss=mse", "train.modality_dropout=0", "train.epochs=2"]
    one = []
    cfg1 = apply_overrides(Config(), [*exact, "train.batch_size=16"])
    fit(cfg1, synth_store, lambda m, c: one.append(m))
    cfg2 = apply_overrides(Config(), [*exact, "train.batch_size=8", "train.workers=2"])
    res = run_training(cfg2, synth_store, tmp_path / "ddp")
    two = res.history
    assert len(two) == 2
    for a, b in zip(one, two):
        assert a["mean_pearson"] == pytest.approx(b["mean_pearson"], abs=2e-3)


def test_predict_defaults_to_the_latest_train_run(tmp_path, monkeypatch):
    import os

    from emi_ray.train.predict import latest_run

    monkeypatch.setenv("EMI_RAY_HOME", str(tmp_path))
    r = runner.invoke(app, ["predict"])
    assert r.exit_code == 2 and "no finished train run under" in r.output
    for i, name in enumerate(["train-b", "train-a"]):  # train-a finished last
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "best.pt").write_bytes(b"")
        os.utime(tmp_path / "runs" / name / "best.pt", ns=(10**18 + i, 10**18 + i))
    (tmp_path / "runs" / "tune-x").mkdir()  # not a train run: no best.pt
    assert latest_run() == tmp_path / "runs" / "train-a"
