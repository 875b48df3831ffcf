"""Shared fixtures: a small seeded synthetic dataset and its feature store (built once)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tests run as `.venv/bin/python -m pytest` without activating the venv: put its console
# scripts (ray, emi-ray, optuna-dashboard) on PATH as activation would.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    from emi_ray.data.synth_dataset import write_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, n_videos=400, seed=0)
    return root


@pytest.fixture(scope="session")
def synth_store(synth_data, tmp_path_factory):
    from emi_ray.extract.organiser import import_organiser

    out = tmp_path_factory.mktemp("store") / "features"
    import_organiser(synth_data, out)
    return out


@pytest.fixture(scope="session")
def realism_store(tmp_path_factory):
    """400 videos of the harder `realism` world (non-zero means, loud dimensions, person offsets,
    long clips) imported into a store: every learning floor is asserted here too."""
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.organiser import import_organiser

    root = tmp_path_factory.mktemp("realism")
    write_dataset(root / "data", n_videos=400, seed=0, realism=True)
    import_organiser(root / "data", root / "features")
    return root / "features"


@pytest.fixture(params=["default", "realism"])
def any_store(request):
    """The default synthetic store, then the realism one (a learning test's floor must hold on both)."""
    return request.getfixturevalue("synth_store" if request.param == "default" else "realism_store")


@pytest.fixture(scope="session")
def small_synth_store(tmp_path_factory):
    """200 synthetic videos imported into a store (the Ray cluster/job tests)."""
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.organiser import import_organiser

    root = tmp_path_factory.mktemp("small")
    write_dataset(root / "data", n_videos=200, seed=0)
    import_organiser(root / "data", root / "features")
    return root / "features"


@pytest.fixture(scope="session")
def media_lite(tmp_path_factory):
    """(dataset dir, store): 120 synthetic mp4s and their `lite` features (stage I's encoders)."""
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.driver import run_extract
    from emi_ray.extract.presets import plan_extract

    root = tmp_path_factory.mktemp("media-lite")
    write_dataset(root / "data", n_videos=120, seed=3, media=True)
    run_extract(root / "data", root / "features", plan_extract("lite"), local=True)
    return root / "data", root / "features"


@pytest.fixture(scope="session")
def affect_corpus(tmp_path_factory):
    """A small synthetic affect corpus (200 items per modality) for stage-I runs."""
    from emi_ray.align.synth import write_affect_corpus

    root = tmp_path_factory.mktemp("affect")
    write_affect_corpus(root, n=200, seed=3)
    return root


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.emi-ray from tests."""
    monkeypatch.setenv("EMI_RAY_HOME", str(tmp_path_factory.getbasetemp() / "emi-home"))


@pytest.fixture(autouse=True)
def _no_ray_left_behind():
    """A test that started Ray itself (e.g. a CLI command run in-process) shuts it down after,
    so a later module's `ray.init(...)` does not meet a leftover session."""
    import ray

    running_before = ray.is_initialized()
    yield
    if not running_before and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors on a 2-vCPU VM: intra-op threads can make ops ~100x slower."""
    import torch

    torch.set_num_threads(1)
