"""RUN/provenance.json: every run directory says how it was made; `emi-ray info RUN` shows it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import emi_ray
from emi_ray.cli import app
from emi_ray.engine import provenance as P

runner = CliRunner()
TINY = ["--set", "train.epochs=1", "--set", "model.dim=16", "--set", "model.fusion_heads=2",
        "--set", "model.audio_hidden=8", "--set", "data.max_len=16", "--workers", "0"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_fields(tmp_path, synth_store, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/emi-ray", "train", "--features", "my store"])
    (tmp_path / "run").mkdir()
    path = P.write_provenance(tmp_path / "run", "train", synth_store, seeds=2)
    rec = json.loads(path.read_text())
    assert rec["kind"] == "train" and rec["seeds"] == 2
    assert rec["command"] == "emi-ray train --features 'my store'" and rec["argv"][1:] == ["train", "--features",
                                                                                          "my store"]
    assert rec["emi_ray"] == emi_ray.__version__ and rec["python"] == sys.version.split()[0]
    assert {"torch", "ray", "optuna", "numpy"} <= {k for k, v in rec["packages"].items() if v}
    assert rec["features"] == str(synth_store.resolve())
    assert rec["features_manifest_sha256"] == sha256(synth_store / "manifest.json")
    from emi_ray.data.store import MANIFEST

    assert P.MANIFEST == MANIFEST


def test_git_commit_of_the_checkout_or_none(tmp_path, monkeypatch):
    pkg = Path(emi_ray.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pkg, capture_output=True, text=True)
    P.git_state.cache_clear()
    commit, dirty = P.git_state()
    if head.returncode == 0 and (pkg.parent / ".git").exists():
        assert commit == head.stdout.strip() and isinstance(dirty, bool)
    else:
        assert commit is None
    # an installed copy (no checkout around it), or git missing: None, never an error
    fake = tmp_path / "site" / "emi_ray"
    fake.mkdir(parents=True)
    monkeypatch.setattr(emi_ray, "__file__", str(fake / "__init__.py"))
    P.git_state.cache_clear()
    assert P.git_state() == (None, None)
    monkeypatch.setattr(emi_ray, "__file__", str(pkg / "__init__.py"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    P.git_state.cache_clear()
    assert P.git_state() == (None, None)
    P.git_state.cache_clear()


def test_python_m_and_library_command_lines():
    assert P.command_line(["/x/emi_ray/__main__.py", "info"]) == "emi-ray info"
    assert P.command_line(["bench.py", "--n", "3"]) == "bench.py --n 3"


def test_resume_appends(tmp_path):
    P.write_provenance(tmp_path, "train", None)
    P.write_provenance(tmp_path, "train", None, resume=True, command="emi-ray train --resume --out X")
    rec = P.read_provenance(tmp_path)
    assert rec["kind"] == "train" and [r["command"] for r in rec["resumed"]] == ["emi-ray train --resume --out X"]
    assert P.read_provenance(tmp_path / "nowhere") is None


def test_baseline_run_and_info(tmp_path, synth_store):
    r = runner.invoke(app, ["baseline", "--features", str(synth_store), "--out", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    rec = P.read_provenance(tmp_path / "b")
    assert rec["kind"] == "baseline" and rec["features_manifest_sha256"] == sha256(synth_store / "manifest.json")
    r = runner.invoke(app, ["info", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "(baseline run)" in r.output and "command:" in r.output and "emi-ray " in r.output
    assert re.search(r"metrics: .*mean_pearson=0\.\d{4}", r.output) and "Admiration" in r.output
    s = json.loads(runner.invoke(app, ["info", str(tmp_path / "b"), "--json"]).stdout)
    assert s["kind"] == "baseline" and s["provenance"]["features"] == str(synth_store.resolve())
    assert s["metrics"]["mean_pearson"] == json.loads((tmp_path / "b" / "metrics.json").read_text())["mean_pearson"]
    assert s["store_changed"] is False


def test_train_run_records_provenance_and_info_shows_it(tmp_path, synth_store):
    run = tmp_path / "t"
    r = runner.invoke(app, ["train", "--features", str(synth_store), "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output
    rec = P.read_provenance(run)
    assert rec["kind"] == "train" and rec["features"] == str(synth_store.resolve())
    assert rec["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"])
    r = runner.invoke(app, ["info", str(run)])
    assert r.exit_code == 0, r.output
    assert "(train run)" in r.output and "versions:   python" in r.output and "torch" in r.output
    assert "train.epochs=1" in r.output and "model.dim=16" in r.output  # what differs from the defaults
    assert "epochs_run=1" in r.output
    s = json.loads(runner.invoke(app, ["info", str(run), "--json"]).stdout)
    assert s["config_changes"]["train.epochs"] == 1 and s["metrics"]["epochs_run"] == 1
    # a run made before provenance was recorded still shows its config and metrics
    (run / "provenance.json").unlink()
    r = runner.invoke(app, ["info", str(run)])
    assert r.exit_code == 0 and "none recorded" in r.output and "(train run)" in r.output
    r = runner.invoke(app, ["info", str(run), "--stats"])
    assert r.exit_code == 2 and "not a run directory" in r.output


def test_multi_run_parent_records_provenance(tmp_path, synth_store, monkeypatch):
    from emi_ray.config import Config
    from emi_ray.train import trainer

    monkeypatch.setattr(trainer, "_train_member", lambda *a, **k: {"mean_pearson": 0.25})
    trainer.run_folds(Config(), synth_store, 2, tmp_path / "cv")
    rec = P.read_provenance(tmp_path / "cv")
    assert rec["kind"] == "folds" and rec["folds"] == 2
    assert rec["features_manifest_sha256"] == sha256(synth_store / "manifest.json")
    s = P.run_summary(tmp_path / "cv")
    assert s["kind"] == "folds" and s["metrics"]["per_fold"] == [0.25, 0.25]


def test_search_and_ablation_dirs_record_provenance():
    """The one call where a search's search.json and an ablation's directory are written."""
    import inspect

    from emi_ray.tune import ablation, search

    assert 'write_provenance(run_dir, "search"' in inspect.getsource(search._new)
    assert 'write_provenance(out_dir, "ablation"' in inspect.getsource(ablation.run_ablation)


@pytest.mark.parametrize("marker, kind", [("search.json", "search"), ("ablation.json", "ablation"),
                                          ("stage1.json", "pretrain"), ("baseline.npz", "baseline")])
def test_kind_without_provenance(tmp_path, marker, kind):
    (tmp_path / marker).write_text("{}")
    assert P.is_run_dir(tmp_path) and P.run_summary(tmp_path)["kind"] == kind
