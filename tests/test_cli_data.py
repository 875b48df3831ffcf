"""CLI: synth, extract (organiser preset), info, score: outputs, errors and exit codes."""

import json
import pickle
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from emi_ray.cli import app

runner = CliRunner()
HEADER = "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "emi_ray", "--help"], capture_output=True, text=True)
    assert time.perf_counter() - t0 < 2.0
    assert r.returncode == 0
    for cmd in ("synth", "extract", "info", "score", "train", "predict", "evaluate", "ablate"):
        assert cmd in r.stdout
    assert "torch" not in sys.modules or True  # the subprocess is what is timed


def test_synth_extract_info(tmp_path):
    r = runner.invoke(app, ["synth", str(tmp_path / "d"), "--videos", "24", "--seed", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["extract", str(tmp_path / "d"), "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    assert "24 done" in r.output
    r = runner.invoke(app, ["info", str(tmp_path / "f"), "--json"])
    info = json.loads(r.output)
    assert info["splits"] == {"train": 12, "valid": 6, "test": 6}
    assert info["modalities"]["video"]["dim"] == 384 and info["modalities"]["audio"]["dim"] == 768
    r = runner.invoke(app, ["extract", str(tmp_path / "d"), "--out", str(tmp_path / "f")])
    assert "0 done, 24 skipped" in r.output


def test_extract_bad_files_recorded_and_resumed(tmp_path, synth_data):
    d = tmp_path / "d"
    shutil.copytree(synth_data, d)
    good = (d / "vit" / "00003.pkl").read_bytes()
    (d / "vit" / "00003.pkl").write_bytes(good[:100])  # truncated
    (d / "wav2vec2" / "00005.pkl").write_bytes(pickle.dumps(np.zeros((10, 12), np.float32)))  # wrong dim
    (d / "vit" / "00007.pkl").write_bytes(pickle.dumps({"not": "an array"}))  # wrong type
    r = runner.invoke(app, ["extract", str(d), "--out", str(tmp_path / "f")])
    assert r.exit_code == 1
    assert "3 failed" in r.output
    errors = (tmp_path / "f" / "errors.csv").read_text()
    assert "00003.pkl" in errors and "expected feature dim 768, got 12" in errors and "got dict" in errors
    # fix one file: the re-run only imports the missing ids
    (d / "vit" / "00003.pkl").write_bytes(good)
    r = runner.invoke(app, ["extract", str(d), "--out", str(tmp_path / "f")])
    assert "1 done, 397 skipped" in r.output and "2 failed" in r.output
    r = runner.invoke(app, ["extract", str(d), "--out", str(tmp_path / "f"), "--skip-bad"])
    assert r.exit_code == 0 and "2 done" in r.output


def test_extract_refuses_malicious_pickle(tmp_path, synth_data):
    d = tmp_path / "d"
    shutil.copytree(synth_data, d)

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (d / "vit" / "00002.pkl").write_bytes(pickle.dumps(Evil()))
    r = runner.invoke(app, ["extract", str(d), "--out", str(tmp_path / "f")])
    assert r.exit_code == 1 and "refused to unpickle" in r.output
    assert not (tmp_path / "pwned").exists()


def test_bad_dataset_is_one_line_exit_2(tmp_path):
    (tmp_path / "vit").mkdir()
    (tmp_path / "train_split.csv").write_text(HEADER + "\n1,0,0,2,0,0,0\n")
    (tmp_path / "valid_split.csv").write_text(HEADER + "\n2,0,0,0,0,0,0\n")
    r = runner.invoke(app, ["extract", str(tmp_path), "--out", str(tmp_path / "f")])
    assert r.exit_code == 2
    assert "train_split.csv:2: Determination=2 outside [0, 1]" in r.output
    assert "Traceback" not in r.output


def write_csv(path, rows, header=HEADER):
    path.write_text("\n".join([header] + [",".join(map(str, r)) for r in rows]) + "\n")


@pytest.fixture
def labels_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[i, *np.round(rng.random(6), 3)] for i in range(1, 21)]
    write_csv(tmp_path / "labels.csv", rows)
    return tmp_path / "labels.csv", rows


def test_score_json_and_table(tmp_path, labels_csv):
    path, rows = labels_csv
    write_csv(tmp_path / "p.csv", [[r[0], *[v * 0.5 + 0.1 for v in r[1:]]] for r in reversed(rows)])
    r = runner.invoke(app, ["score", str(tmp_path / "p.csv"), str(path), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["mean_pearson"] == pytest.approx(1.0) and set(res["per_emotion"]) >= {"Joy"}
    r = runner.invoke(app, ["score", str(tmp_path / "p.csv"), str(path)])
    assert "mean" in r.output and "1.0000" in r.output


@pytest.mark.parametrize("case, message", [
    ("missing", "1 id(s) of"), ("extra", "are not in"), ("dup", "duplicate id 3"),
    ("header", "expected header"), ("nan", "NaN or infinite"),
])
def test_score_errors(tmp_path, labels_csv, case, message):
    path, rows = labels_csv
    preds = [list(r) for r in rows]
    header = HEADER
    if case == "missing":
        preds = preds[1:]
    elif case == "extra":
        preds.append([999, 0, 0, 0, 0, 0, 0])
    elif case == "dup":
        preds.append(list(preds[2]))
    elif case == "header":
        header = HEADER.replace("Joy", "joy")
    elif case == "nan":
        preds[0][1] = "nan"
    write_csv(tmp_path / "p.csv", preds, header)
    r = runner.invoke(app, ["score", str(tmp_path / "p.csv"), str(path)])
    assert r.exit_code == 2
    assert message in r.output and "p.csv" in r.output
