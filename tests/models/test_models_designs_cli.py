"""Each leaderboard design through the user's commands: `emi-ray train` (text_anchor as a Ray TorchTrainer
run, lstm_mlp in-process: the same training core, without a second ~20 s Train start-up), then
`emi-ray predict` on it alone and averaged with a run of another design (an ensemble across designs)."""

import csv

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

TINY = ["model.dim=16", "model.fusion_heads=2", "model.lstm_hidden=8", "model.anchor_layers=1", "data.max_len=16",
        "train.epochs=2"]


def train(runner, app, store, out, arch, workers=1):
    args = ["train", "--features", str(store), "--out", str(out), "--set", f"model.arch={arch}",
            "--workers", str(workers)]
    for item in TINY:
        args += ["--set", item]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return out


def test_each_design_trains_predicts_and_ensembles(small_synth_store, tmp_path):
    from emi_ray.cli import app
    from emi_ray.data.store import FeatureStore

    runner = CliRunner()
    runs = {arch: train(runner, app, small_synth_store, tmp_path / arch, arch, workers)
            for arch, workers in (("text_anchor", 1), ("lstm_mlp", 0))}
    test_ids = sorted(FeatureStore(small_synth_store).ids("test"))
    for name, members in (("one", [runs["text_anchor"]]), ("both", list(runs.values()))):
        out = tmp_path / f"{name}.csv"
        r = runner.invoke(app, ["predict", *map(str, members), "--out", str(out)])
        assert r.exit_code == 0, r.output
        rows = list(csv.reader(out.open()))[1:]
        assert [int(x[0]) for x in rows] == test_ids
        assert all(0 <= float(v) <= 1 for x in rows for v in x[1:])
