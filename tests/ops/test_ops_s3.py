"""`s3://` locations through pyarrow's filesystems, against a local S3 server (moto).

The server and the client configuration are what a user sets: the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) and nothing
in emi-ray's config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ops_util import TINY, free_port, make_study, tiny_space

moto_server = pytest.importorskip("moto.server", reason="moto[server] (the dev extra) is not installed")


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 and the AWS environment pointing at it, with bucket `emi`."""
    import boto3

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    boto3.client("s3").create_bucket(Bucket="emi")
    try:
        yield env
    finally:
        mp.undo()
        server.stop()


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory):
    from emi_ray.data.synth_dataset import write_dataset

    root = tmp_path_factory.mktemp("s3-synth") / "data"
    write_dataset(root, n_videos=60, seed=0)
    return root


def test_io_helpers_on_s3(s3_env):
    from emi_ray import io

    uri = "s3://emi/misc"
    assert io.location(uri) == uri and io.join(uri, "a", "b.txt") == "s3://emi/misc/a/b.txt"
    assert not io.exists(io.join(uri, "x.txt")) and io.list_files(uri) == []
    io.atomic_write_text(io.join(uri, "x.txt"), "hello")
    io.atomic_write_text(io.join(uri, "y.csv"), "a,b")
    assert io.read_bytes(io.join(uri, "x.txt")) == b"hello"
    assert io.list_files(uri, "*.txt") == ["s3://emi/misc/x.txt"]
    io.remove_file(io.join(uri, "x.txt"))
    assert io.list_files(uri) == ["s3://emi/misc/y.csv"]


def test_dashboard_study_snapshot_from_s3(s3_env, tmp_path):
    """A study copied to S3 (sqlite cannot live there): `emi-ray dashboard s3://RUN` serves a local snapshot."""
    import optuna

    from emi_ray import io
    from emi_ray.errors import InputError
    from emi_ray.ops import fetch_study_snapshot, find_study_storage

    make_study(tmp_path / "optuna.db", n=4)
    io.atomic_write_bytes("s3://emi/runs/tune-x/optuna.db", (tmp_path / "optuna.db").read_bytes())
    for uri in ("s3://emi/runs/tune-x", "s3://emi/runs/tune-x/optuna.db"):
        snap = fetch_study_snapshot(uri, tmp_path / "snap")
        assert find_study_storage(snap) == snap.resolve()
        study = optuna.load_study(study_name="search", storage=f"sqlite:///{snap}")
        assert len(study.trials) == 4
    for missing in ("s3://emi/runs/none", "s3://no-such-bucket/run"):
        with pytest.raises(InputError, match="no Optuna study storage"):
            fetch_study_snapshot(missing, tmp_path / "snap2")
    from typer.testing import CliRunner

    from emi_ray.cli import app

    r = CliRunner().invoke(app, ["dashboard", "s3://emi/runs/none"])  # the URI reaches it unfolded
    assert r.exit_code == 2 and "s3://emi/runs/none: no Optuna study storage" in r.output, r.output


def test_feature_store_on_s3_equals_local(s3_env, synth_small, tmp_path):
    """import_organiser writes the same store to S3 as to disk; every read gives the same answers."""
    from emi_ray.data.dataset import FeatureDataset
    from emi_ray.data.store import FeatureStore
    from emi_ray.extract.organiser import import_organiser

    uri = "s3://emi/features"
    import_organiser(synth_small, tmp_path / "features")
    import_organiser(synth_small, uri)
    local, remote = FeatureStore(tmp_path / "features"), FeatureStore(uri)
    assert remote.root == uri and len(remote.shards) == len(local.shards) >= 2
    assert all(str(p).startswith(f"{uri}/shards/") for p in remote.shards)
    assert remote.manifest["modalities"] == local.manifest["modalities"]
    assert remote.ids() == local.ids() and remote.ids("valid") == local.ids("valid")
    for a, b in zip(remote.labels("train"), local.labels("train"), strict=True):
        np.testing.assert_array_equal(a, b)
    info_r, info_l = remote.info(), local.info()
    assert info_r["splits"] == info_l["splits"] and info_r["modalities"] == info_l["modalities"]
    assert remote.errors() == local.errors()
    # The training data set loads from S3 exactly as from disk.
    mods = local.modalities
    ds_r, ds_l = FeatureDataset(uri, "train", mods, max_len=16), FeatureDataset(local, "train", mods, max_len=16)
    assert len(ds_r) == len(ds_l)
    for k, v in ds_l[0].items():
        np.testing.assert_array_equal(np.asarray(ds_r[0][k], dtype=float), np.asarray(v, dtype=float))
    # Re-running the import skips every stored id (resume works on S3 too).
    again = import_organiser(synth_small, uri)
    assert again.skipped == len(local.ids())
    assert FeatureStore(uri).ids() == local.ids() and len(FeatureStore(uri).shards) == len(remote.shards)


def test_missing_store_on_s3_is_one_error(s3_env):
    from emi_ray.data.store import FeatureStore
    from emi_ray.errors import StoreError

    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore("s3://emi/nothing-here")


@pytest.mark.slow
def test_tune_storage_path_on_s3(s3_env, small_synth_store):
    """Ray Tune with storage_path=s3://...: emi-ray's trial function checkpoints to S3 and the
    experiment restores from there (Ray's own pyarrow storage; workers get the AWS environment)."""
    import ray
    from ray import tune

    from emi_ray import io
    from emi_ray.config import load_config
    from emi_ray.tune.trainable import train_trial

    if ray.is_initialized():
        ray.shutdown()  # the workers must start with the AWS environment of s3_env
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level="WARNING")
    try:
        base = load_config(None, [*TINY, "train.epochs=2"]).to_dict()
        space = {"base": base, "features": str(small_synth_store), "train.lr_max": tune.grid_search([1e-3, 2e-3])}
        run_config = tune.RunConfig(name="search", storage_path="s3://emi/runs/ray", verbose=0,
                                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
        rg = tune.Tuner(tune.with_resources(train_trial, {"CPU": 1}), param_space=space,
                        tune_config=tune.TuneConfig(metric="mean_pearson", mode="max"),
                        run_config=run_config).fit()
        assert not rg.errors and len(rg) == 2
        for r in rg:
            assert r.path.startswith("emi/runs/ray/search/") and r.checkpoint is not None
            assert r.metrics["training_iteration"] == 2
            with r.checkpoint.as_directory() as d:  # downloaded from S3
                assert any(Path(d).rglob("state.pt"))
        assert io.list_files("s3://emi/runs/ray/search", "experiment_state-*.json")
        assert tune.Tuner.can_restore("s3://emi/runs/ray/search")
    finally:
        ray.shutdown()


# --- the commands with s3:// locations: --features, extract --out, --storage -------------------------------------

_RAY = {"ours": False}


@pytest.fixture
def s3_ray(s3_env):
    """A local Ray (2 CPUs) started with the AWS environment of s3_env, so its workers read and write S3."""
    import ray

    if ray.is_initialized() and not _RAY["ours"]:
        ray.shutdown()  # another module's Ray: its workers lack the AWS environment
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 logging_level="WARNING")
        _RAY["ours"] = True
    yield ray


@pytest.fixture(scope="module", autouse=True)
def _ray_down_after_module():
    yield
    if _RAY["ours"]:
        import ray

        ray.shutdown()
        _RAY["ours"] = False


@pytest.fixture(scope="module")
def s3_store(s3_env, synth_small):
    """synth_small imported into s3://emi/store."""
    from emi_ray.extract.organiser import import_organiser

    import_organiser(synth_small, "s3://emi/store")
    return "s3://emi/store"


def cli(*args: str):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    return CliRunner().invoke(app, [*args])


def sets(*items: str) -> list[str]:
    return [a for it in items for a in ("--set", it)]


def test_cli_info_train_predict_evaluate_with_s3_features(s3_env, s3_store, tmp_path):
    """--features s3://...: info, train (in-process), predict and evaluate read the store from S3."""
    import csv
    import json

    from emi_ray.data.store import FeatureStore

    r = cli("info", s3_store, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["splits"] == FeatureStore(s3_store).info()["splits"] and sum(info["splits"].values()) == 60

    run = tmp_path / "run"
    r = cli("train", "--features", s3_store, "--workers", "0", "--out", str(run), "--json",
            *sets(*TINY, "train.epochs=2", "train.batch_size=16"))
    assert r.exit_code == 0, r.output
    from emi_ray.config import load_config

    assert load_config(run / "config.yaml").data.features == s3_store  # recorded as given, not folded
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2

    r = cli("predict", str(run), "--out", str(tmp_path / "preds.csv"))  # the run's own store: on S3
    assert r.exit_code == 0, r.output
    rows = list(csv.reader((tmp_path / "preds.csv").open()))
    assert [int(x[0]) for x in rows[1:]] == sorted(FeatureStore(s3_store).ids("test"))
    r = cli("predict", str(run), "--features", s3_store, "--split", "valid", "--out", str(tmp_path / "v.csv"))
    assert r.exit_code == 0, r.output
    r = cli("evaluate", str(run), "--features", s3_store, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["mean_pearson"] == pytest.approx(metrics["mean_pearson"], abs=1e-5)


def test_cli_extract_lite_to_s3_resumes(s3_ray, tmp_path):
    """`extract DATA --preset lite --out s3://...` writes the store to S3; a re-run skips every stored id."""
    from emi_ray.data.store import FeatureStore
    from emi_ray.data.synth_dataset import write_dataset

    write_dataset(tmp_path / "data", n_videos=8, seed=1, media=True)
    uri = "s3://emi/lite"
    r = cli("extract", str(tmp_path / "data"), "--preset", "lite", "--out", uri)
    assert r.exit_code == 0, r.output
    assert f"{uri}: 8 done, 0 skipped" in r.output, r.output
    store = FeatureStore(uri)
    assert len(store.ids()) == 8 and set(store.modalities) >= {"video", "audio"}
    r = cli("extract", str(tmp_path / "data"), "--preset", "lite", "--out", uri)
    assert r.exit_code == 0 and f"{uri}: 0 done, 8 skipped" in r.output, r.output
    r = cli("extract", str(tmp_path / "data"), "--preset", "lite", "--out", uri, "--aligned", str(tmp_path))
    assert r.exit_code == 2 and "must be a local directory" in r.output, r.output


@pytest.mark.slow
def test_cli_train_storage_on_s3_and_resume(s3_ray, s3_store, tmp_path):
    """`train --workers 1 --storage s3://...`: Ray Train's checkpoints go to S3 (RUN keeps the results), and
    `--resume` (no --storage: RUN/storage.txt remembers it) continues from the checkpoint there."""
    import csv
    import json

    from emi_ray import io

    run = tmp_path / "run"
    args = ["--features", s3_store, "--workers", "1", "--out", str(run), "--json"]
    r = cli("train", *args, "--storage", "s3://emi/ray-train", *sets(*TINY, "train.epochs=2", "train.batch_size=16"))
    assert r.exit_code == 0, r.output
    from emi_ray.engine.rundir import storage_name

    root = f"s3://emi/ray-train/{storage_name(run)}"
    assert (run / "storage.txt").read_text().strip() == root
    assert not (run / "ray").exists()
    for name in ("config.yaml", "metrics.json", "history.csv", "best.pt"):
        assert (run / name).is_file(), name
    from pyarrow import fs

    fsys, base = io.filesystem(f"{root}/train")
    found = [i.path for i in fsys.get_file_info(fs.FileSelector(base, recursive=True))]
    assert any(p.endswith("state.pt") for p in found), found  # the checkpoint lives in S3
    first = list(csv.DictReader((run / "history.csv").open()))
    assert len(first) == 2

    r = cli("train", *args, "--resume", *sets("train.epochs=3"))
    assert r.exit_code == 0, r.output
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3
    again = list(csv.DictReader((run / "history.csv").open()))
    assert [h["epoch"] for h in again] == ["0", "1", "2"]
    assert again[:2] == first  # epochs 0-1 came from the S3 checkpoint (timings included), not re-trained


def test_study_copied_to_s3_after_each_ended_trial(s3_env, tmp_path):
    """With --storage, the trial-event listener copies a snapshot of optuna.db after every ended trial."""
    import optuna

    from emi_ray.errors import InputError
    from emi_ray.ops import fetch_study_snapshot
    from emi_ray.tune.events import publishing as _publishing

    seen = []
    settings = {"storage": "s3://emi/runs/tune-ev"}
    listener = _publishing(lambda e, d: seen.append(e), tmp_path, settings["storage"], print)
    study = make_study(tmp_path / "optuna.db", n=2)
    listener("result", {"trial_id": "a"})  # not an ended trial: nothing copied
    with pytest.raises(InputError, match="no Optuna study storage"):
        fetch_study_snapshot(settings["storage"], tmp_path / "snap0")
    listener("complete", {"trial_id": "a"})
    snap = fetch_study_snapshot(settings["storage"], tmp_path / "snap1")
    assert len(optuna.load_study(study_name="search", storage=f"sqlite:///{snap}").trials) == 2
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=1)
    listener("error", {"trial_id": "b"})
    snap = fetch_study_snapshot(settings["storage"], tmp_path / "snap2")
    assert len(optuna.load_study(study_name="search", storage=f"sqlite:///{snap}").trials) == 3
    assert seen == ["result", "complete", "error"]
    assert _publishing(print, tmp_path, None, print) is print  # no --storage: the listener is the progress


@pytest.mark.slow
def test_cli_tune_features_and_storage_on_s3_resume(s3_ray, s3_store, tmp_path, monkeypatch):
    """`tune --features s3://... --storage s3://...`: trials read the store from S3, Tune's experiment and a
    copy of the study land in S3 (the dashboard's snapshot reads it), and --resume restores from there."""
    import json

    import optuna

    from emi_ray import io
    from emi_ray.ops import fetch_study_snapshot
    from emi_ray.tune.experiment import fit_search  # noqa: F401  (import cost outside the timed CLI calls)

    monkeypatch.setenv("EMI_RAY_HOME", str(tmp_path / "home"))
    space = tiny_space(tmp_path, trials=2, epochs=2, concurrency=2)
    run = tmp_path / "tune-run"
    r = cli("tune", "--space", str(space), "--features", s3_store, "--storage", "s3://emi/runs", "--out", str(run))
    assert r.exit_code == 0, r.output
    from emi_ray.engine.rundir import storage_name

    root = f"s3://emi/runs/{storage_name(run)}"  # unique per run: another tune-run elsewhere gets another name
    assert root.startswith("s3://emi/runs/tune-run-")
    assert f"Ray storage:    {root}" in r.output
    settings = json.loads((run / "search.json").read_text())
    assert settings["features"] == s3_store and settings["storage"] == root
    assert not (run / "ray" / "search").exists() and (run / "optuna.db").is_file() and (run / "best.yaml").is_file()
    assert io.list_files(f"{root}/search", "experiment_state-*.json")
    for name in ("optuna.db", "search.json", "trials.csv", "summary.json", "best.yaml"):
        assert io.exists(f"{root}/{name}"), name
    snap = fetch_study_snapshot(root, tmp_path / "snap")
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{snap}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]

    r = cli("tune", "--resume", "--out", str(run))
    assert r.exit_code == 0, r.output
    assert "2 of 2 trials had finished" in r.output and "no Tune snapshot" not in r.output, r.output
    assert json.loads((run / "summary.json").read_text())["counts"]["total"] == 2


def test_ray_storage_of_a_run_is_kept_on_resume(tmp_path):
    """RUN/ray by default; STORAGE/<run name> with --storage (recorded); a resumed run keeps what it started with."""
    from emi_ray.engine.rundir import ray_storage, storage_name

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert ray_storage(a, None) == str(a / "ray") and not (a / "storage.txt").exists()
    assert ray_storage(a, "s3://emi/ray", resume=True) == str(a / "ray")  # started without: stays local
    named = f"s3://emi/ray/{storage_name(b)}"
    assert named.startswith("s3://emi/ray/b-")  # the run's name + a digest of its full path
    assert ray_storage(b, "s3://emi/ray/") == named == (b / "storage.txt").read_text().strip()
    assert ray_storage(b, None, resume=True) == ray_storage(b, "s3://other", resume=True) == named
    other_b = tmp_path / "elsewhere" / "b"  # another run of the same name: another storage path
    other_b.mkdir(parents=True)
    assert ray_storage(other_b, "s3://emi/ray") != named
