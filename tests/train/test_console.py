"""The console is for people: one line per epoch when output is not a terminal, Ray's own log
lines in the run's ray.log (not on the console), history.csv growing as epochs end."""

from __future__ import annotations

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from emi_ray.cli import app

TINY = ["model.dim=16", "model.segments=2", "model.tcn_layers=1", "model.fusion_layers=1", "model.fusion_heads=2",
        "model.dropout=0.0", "train.patience=0", "train.batch_size=16"]


def sets(*items):
    return [a for it in items for a in ("--set", it)]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from emi_ray.ray_env import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_train_prints_one_line_per_epoch_and_keeps_ray_lines_in_a_log(ray_session, synth_store, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--features", str(synth_store), "--workers", "1", "--out", str(run),
                                 *sets(*TINY, "train.epochs=3")])
    assert r.exit_code == 0, r.output
    epochs = re.findall(r"^train epoch (\d+)/3 .*valid r (-?[\d.]+)\s+best", r.output, re.M)
    assert [int(e) for e, _ in epochs] == [1, 2, 3], r.output
    for noise in ("TrainingReport(", "core_worker", "TrainController", "RayTrainWorker", "Reporting training result"):
        assert noise not in r.output
    assert (run / "ray.log").is_file() and (run / "ray.log").stat().st_size > 0
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    with (run / "history.csv").open() as f:  # the final history is the recorded one
        assert [float(h["mean_pearson"]) for h in csv.DictReader(f)] == pytest.approx(
            [row["mean_pearson"] for row in rows])
    printed = [float(v) for _, v in epochs]  # the console showed each epoch's own value
    assert printed == pytest.approx([row["mean_pearson"] for row in rows], abs=1e-4)


def test_history_grows_as_epochs_end(synth_store, tmp_path):
    """Recording writes RUN/history.csv at each epoch, before the run ends."""
    from emi_ray.config import load_config
    from emi_ray.engine.progress import ProgressWatcher, recording
    from emi_ray.train.loop import fit

    shown = []
    cfg = load_config(None, [*TINY, "train.epochs=3", "train.workers=0"])
    lengths = []
    rec = recording(lambda m, c: None, tmp_path)

    def counting(metrics, ckpt):
        rec(metrics, ckpt)
        with (tmp_path / "history.csv").open() as f:
            lengths.append(len(list(csv.DictReader(f))))

    with ProgressWatcher(tmp_path, shown.append, interval_s=0.05):
        fit(cfg, synth_store, counting)
    assert lengths == [1, 2, 3]
    assert [m["epoch"] for m in shown] == [0, 1, 2]  # each epoch once, in order


def test_stage1_reports_to_ray_only_when_it_checkpoints(affect_corpus):
    """Between checkpoints an epoch is only recorded (progress_only); Ray hears of the last one."""
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import Encoders, corpus_features
    from emi_ray.align.loop import pretrain
    from emi_ray.config import load_config

    c = load_corpus(affect_corpus)
    data = {"vision": corpus_features(c, "vision", Encoders())}

    class Counting:
        def __init__(self):
            self.reported, self.recorded = [], []

        def __call__(self, metrics, ckpt):
            self.reported.append((metrics["epoch"], ckpt is not None))

        def progress_only(self, metrics):
            self.recorded.append(metrics["epoch"])

    cfg = load_config(None, ["stage1.epochs=5", "stage1.batch_size=32", "stage1.dim=32"])
    every_epoch, rare = Counting(), Counting()
    pretrain(load_config(None, ["stage1.epochs=5", "stage1.batch_size=32", "stage1.dim=32",
                                "stage1.checkpoint_every_s=0"]), data, every_epoch, dim=32)
    pretrain(cfg, data, rare, dim=32)
    assert every_epoch.reported == [(e, True) for e in range(5)] and every_epoch.recorded == []
    assert rare.reported == [(4, True)] and rare.recorded == [0, 1, 2, 3]

