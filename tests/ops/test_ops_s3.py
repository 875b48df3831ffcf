"""`s3://` locations through pyarrow's filesystems, against a local S3 server (moto).

The server and the client configuration are what a user sets: the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) and nothing
in emi-ray's config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ops_util import TINY, free_port, make_study

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
    from emi_ray.data.synth import write_dataset

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
