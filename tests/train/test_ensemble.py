"""Ensembles (`train --seeds N`, several runs to `predict`/`evaluate`) and the bad inputs around them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from emi_ray.cli import app

TINY = ["--set", "train.epochs=3", "--set", "model.dim=32", "--set", "model.fusion_heads=2", "--workers", "0"]


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output


@pytest.fixture(scope="module")
def seeds_run(synth_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("ens") / "run"
    res = _cli("train", "--features", synth_store, "--seeds", 2, "--out", run, *TINY)
    assert res.exit_code == 0, res.output
    return run


def test_train_seeds_writes_an_ensemble_whose_prediction_is_the_members_mean(seeds_run, synth_store, tmp_path):
    from emi_ray.train.predict import predict_split

    spec = json.loads((seeds_run / "ensemble.json").read_text())
    assert spec["members"] == ["seed-0", "seed-1"]
    metrics = json.loads((seeds_run / "metrics.json").read_text())
    assert set(metrics["members"]) == {str(seeds_run / "seed-0"), str(seeds_run / "seed-1")}
    for k, name in enumerate(spec["members"]):
        assert yaml.safe_load((seeds_run / name / "config.yaml").read_text())["train"]["seed"] == k
    seeds = {json.loads((seeds_run / n / "metrics.json").read_text())["mean_pearson"] for n in spec["members"]}
    assert len(seeds) == 2  # different seeds, different models
    assert metrics["mean_pearson"] > 0.05  # learned something in 3 epochs

    res = _cli("predict", seeds_run, "--split", "valid", "--out", tmp_path / "p.csv")
    assert res.exit_code == 0 and "average of 2 runs" in res.output, res.output
    got = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    preds = [predict_split(seeds_run / n, None, "valid")[1] for n in spec["members"]]
    np.testing.assert_allclose(got[:, 1:], np.clip(np.mean(preds, 0), 0, 1), atol=1e-6)


def test_evaluate_reports_the_ensemble_and_each_member(seeds_run):
    res = _cli("evaluate", seeds_run, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    saved = json.loads((seeds_run / "metrics.json").read_text())
    assert out["mean_pearson"] == pytest.approx(saved["mean_pearson"], abs=1e-9)
    assert len(out["members"]) == 2 and out["best_member"] == max(out["members"].values())
    table = _cli("evaluate", seeds_run)
    assert "ensemble of 2" in table.output and "seed-1" in table.output


def test_runs_over_different_stores_cannot_be_ensembled(synth_store, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(synth_store, other)
    for store, run in ((synth_store, tmp_path / "b1"), (other, tmp_path / "b2")):
        assert _cli("baseline", "--features", store, "--out", run).exit_code == 0
    _one_line_error(_cli("predict", tmp_path / "b1", tmp_path / "b2", "--out", tmp_path / "p.csv"),
                    "different feature stores")
    assert not (tmp_path / "p.csv").exists()


def test_a_baseline_and_a_model_run_on_one_store_average(seeds_run, synth_store, tmp_path):
    assert _cli("baseline", "--features", synth_store, "--out", tmp_path / "b").exit_code == 0
    res = _cli("evaluate", seeds_run / "seed-0", tmp_path / "b", "--json")
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["members"]) == 2


def test_a_store_without_a_train_split_is_one_line(synth_store, tmp_path):
    store = tmp_path / "no-train"
    shutil.copytree(synth_store, store)
    for p in (store / "shards").glob("train-*.parquet"):
        p.unlink()
    _one_line_error(_cli("train", "--features", store, "--out", tmp_path / "run", *TINY), "train split")
    assert not (tmp_path / "run").exists()
    _one_line_error(_cli("baseline", "--features", store, "--out", tmp_path / "b"), "train")


def test_a_modality_constant_in_every_dimension_is_one_line(tmp_path):
    from emi_ray.data.store_writer import Row, StoreWriter

    rng = np.random.default_rng(0)
    w = StoreWriter(tmp_path / "s", {"video": {"encoder": "t", "dim": 4}, "audio": {"encoder": "t", "dim": 3}})
    for i in range(40):
        w.add(Row(vid=i + 1, split="train" if i < 30 else "valid", labels=rng.random(6).astype(np.float32),
                  features={"video": rng.standard_normal((5, 4)).astype(np.float32),
                            "audio": np.ones((6, 3), np.float32)}))
    w.close()
    _one_line_error(_cli("train", "--features", tmp_path / "s", "--out", tmp_path / "run",
                         "--set", "model.modalities=[video,audio]", *TINY), "'audio' has zero variance")
    res = _cli("train", "--features", tmp_path / "s", "--out", tmp_path / "run2",
               "--set", "model.modalities=[video]", *TINY)
    assert res.exit_code == 0, res.output  # without the constant modality it trains


def test_seeds_must_be_at_least_two_and_a_finished_ensemble_is_not_overwritten(seeds_run, synth_store):
    before = (seeds_run / "metrics.json").read_bytes()
    _one_line_error(_cli("train", "--features", synth_store, "--seeds", 2, "--out", seeds_run, *TINY),
                    "exists")
    assert (seeds_run / "metrics.json").read_bytes() == before
