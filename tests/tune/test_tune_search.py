"""Ray end-to-end: a tiny search, its outputs and storage, ASHA, failures, resume, confirm, train --best.

One Ray session (2 CPUs) for the module; a small store (120 videos) whose test shards are
corrupted, so any read of the test split would fail a trial.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emi_ray.config import Config

pytestmark = pytest.mark.slow

TINY = {"model.dim": 16, "train.batch_size": 16, "data.max_len": 16, "model.fusion_layers": 1,
        "model.audio_hidden": 16, "model.tcn_layers": 1}


def space_file(root: Path, name: str, params: str, trials: int, epochs: int, grace: int = 1) -> Path:
    fixed = ", ".join(f"{k}: {v}" for k, v in TINY.items())
    p = root / f"{name}.yaml"
    p.write_text(textwrap.dedent(f"""\
        trials: {trials}
        max_epochs: {epochs}
        concurrency: 2
        scheduler: {{kind: asha, grace_period: {grace}, reduction_factor: 2}}
        fixed: {{{fixed}}}
        params:
        """) + textwrap.indent(textwrap.dedent(params), "  "))
    return p


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.organiser import import_organiser

    root = tmp_path_factory.mktemp("tune-store")
    write_dataset(root / "data", n_videos=120, seed=0)
    out = root / "features"
    import_organiser(root / "data", out)
    tests = sorted((out / "shards").glob("test-*.parquet"))
    assert tests and sorted((out / "shards").glob("train-*.parquet"))
    for p in tests:  # any read of the test split now raises (chmod alone does not stop root)
        p.write_bytes(b"not parquet: the search must never open test shards")
        p.chmod(0)
    return out


@pytest.fixture(scope="module")
def ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        # address="local": start our own (never join a `ray start` cluster that happens to run here)
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("tune-home")


@pytest.fixture
def in_home(home, monkeypatch):
    monkeypatch.setenv("EMI_RAY_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def search(store, ray_session, home, tmp_path_factory):
    """8 tiny trials x 3 epochs, ASHA rungs at 1 and 2 epochs."""
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    old = os.environ.get("EMI_RAY_HOME")
    os.environ["EMI_RAY_HOME"] = str(home)
    try:
        root = tmp_path_factory.mktemp("tune-spaces")
        sp = space_file(root, "tiny", """\
            model.fusion: {choice: [quality, mean, concat]}
            model.dropout: {uniform: [0.0, 0.3]}
            model.modalities: {choice: [[video, audio, text], [audio, text], [audio]]}
            train.lr_max: {loguniform: [1.0e-4, 3.0e-3]}
            """, trials=8, epochs=3)
        notes: list[str] = []
        res = run_search(SearchRequest(sp, store, seed=0), notify=notes.append)
    finally:
        if old is None:
            os.environ.pop("EMI_RAY_HOME", None)
        else:
            os.environ["EMI_RAY_HOME"] = old
    return res, notes


def test_search_end_to_end(search, store):
    import optuna

    from emi_ray.config import load_config

    res, notes = search
    assert res.counts["total"] == 8 and res.counts["failed"] == 0  # test shards are unreadable: never read
    assert not res.interrupted
    assert sum("trial " in n and "/8" in n for n in notes) == 8
    for f in ("trials_csv", "history_png", "importance_png", "summary", "best_yaml"):
        assert res.files[f].is_file() and res.files[f].stat().st_size > 0, f
    assert res.files["history_png"].read_bytes()[:4] == b"\x89PNG"
    cfg = load_config(res.files["best_yaml"])
    assert cfg.model.dim == 16 and cfg.train.epochs == 3 and cfg.train.patience == 0
    assert cfg.data.features == str(store.resolve())
    for k, v in res.best["params"].items():
        got = getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])
        assert ("+".join(got) if isinstance(got, list) else got) == v
    assert res.best["mean_pearson"] == max(r["mean_pearson"] for r in res.top if r["status"] == "complete")
    rows = list(csv.DictReader(res.files["trials_csv"].open()))
    assert len(rows) == 8 and {"number", "status", "mean_pearson", "epochs", "model.fusion"} <= set(rows[0])
    # the study opens with optuna.load_study and holds every trial
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{res.storage}")
    assert len(study.trials) == 8
    state = {"complete": optuna.trial.TrialState.COMPLETE, "stopped early": optuna.trial.TrialState.PRUNED}
    by_id = {r["trial_id"]: r for r in res.trials}
    assert all(t.state == state[by_id[t.user_attrs["tune_trial_id"]]["status"]] for t in study.trials)
    assert {t.user_attrs["tune_trial_id"] for t in study.trials} == {r["trial_id"] for r in res.trials}
    # TPE starts from the base config (the defaults lie in this space)
    assert study.trials[0].params == {"model.fusion": "quality", "model.dropout": 0.1,
                                      "model.modalities": "video+audio+text", "train.lr_max": 1e-3}
    summary = json.loads(res.files["summary"].read_text())
    assert summary["best"]["trial_id"] == res.best["trial_id"]
    defaults = Config().train  # the full budget of `train --best` is the default schedule
    assert summary["full_budget"] == {"train.epochs": defaults.epochs, "train.patience": defaults.patience}
    assert res.best["mean_pearson"] > 0.05  # tiny model, 60 videos, <= 3 epochs: it learned something


def dashboard_get(app, path: str):
    """GET `path` from optuna-dashboard's WSGI app (what `emi-ray dashboard` serves): the JSON body."""
    from wsgiref.util import setup_testing_defaults

    env = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(env)
    status = []
    body = b"".join(app(env, lambda s, _h, _e=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:300])
    return json.loads(body)


def test_one_objective_study_dashboard_csv_and_best_yaml_agree(search):
    """Optuna is told each trial's best-epoch r (what trials.csv scores and best.yaml keeps), epoch by
    epoch as the best so far; ASHA's stops are PRUNED with the epoch reached; the study's best trial,
    optuna-dashboard's, trials.csv's and best.yaml's are one trial with one value."""
    import optuna
    from optuna_dashboard import wsgi

    from emi_ray.config import load_config
    from emi_ray.ops import open_storage

    res, _ = search
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{res.storage}")
    rows = {int(r["number"]): r for r in csv.DictReader(res.files["trials_csv"].open())}
    for t in study.trials:
        row = rows[t.number]
        assert row["trial_id"] == t.user_attrs["tune_trial_id"]
        epochs = int(row["epochs"])
        # the value told is the best epoch's r, as trials.csv has it (not the last epoch's)
        assert t.value == pytest.approx(float(row["mean_pearson"]), abs=1e-6), (t.number, row)
        # every epoch reported, as the best so far (non-decreasing), the last one included
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, epochs + 1)), (t.number, t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        assert values == sorted(values) and values[-1] == pytest.approx(t.value)
        progress = list(csv.DictReader((res.run_dir / "ray" / "search" / f"trial_{row['trial_id']}"
                                        / "progress.csv").open()))
        per_epoch = [float(p["mean_pearson"]) for p in progress]
        assert values == pytest.approx([max(per_epoch[: i + 1]) for i in range(len(per_epoch))])
        if row["status"] == "stopped early":
            assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["stopped_at_epoch"] == epochs < 3
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and epochs == 3
    # (whether a trial's best epoch came before its last depends on the run; test_tune_objective.py tells
    # the searcher such a trial for certain)
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)

    best = study.best_trial
    # optuna-dashboard's view of the same storage (emi-ray dashboard serves open_storage(RUN/optuna.db))
    app = wsgi(open_storage(res.storage))
    (sid,) = [s["study_id"] for s in dashboard_get(app, "/api/studies")["study_summaries"]
              if s["study_name"] == "search"]
    shown = dashboard_get(app, f"/api/studies/{sid}")["best_trials"]
    assert [b["number"] for b in shown] == [best.number] and shown[0]["values"][0] == pytest.approx(best.value)
    # trials.csv: the best trial that ran all epochs
    top = max((r for r in rows.values() if r["status"] == "complete"), key=lambda r: float(r["mean_pearson"]))
    assert int(top["number"]) == best.number and float(top["mean_pearson"]) == pytest.approx(best.value, abs=1e-6)
    # best.yaml: its header names the trial and the value; its config is the trial's
    header = res.files["best_yaml"].read_text().splitlines()[1]
    m = re.match(r"# trial (\d+) \((\w+)\): validation mean r (-?[\d.]+) ", header)
    assert m, header
    assert int(m[1]) == best.number and m[2] == best.user_attrs["tune_trial_id"]
    assert float(m[3]) == pytest.approx(best.value, abs=1e-4)
    cfg = load_config(res.files["best_yaml"])
    for k, v in best.params.items():
        got = getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])
        got = "+".join(got) if isinstance(got, list) else got
        assert got == (pytest.approx(v) if isinstance(v, float) else v), (k, got, v)
    assert res.best["number"] == best.number
    assert json.loads(res.files["summary"].read_text())["objective"] == "best_mean_pearson"


def test_asha_stops_some_trials_early(search):
    res, _ = search
    epochs = [r["epochs"] for r in res.trials]
    assert any(e < 3 for e in epochs), epochs
    assert any(e == 3 for e in epochs), epochs
    assert res.counts["stopped early"] >= 1


def test_pointer_and_train_best(search, in_home, tmp_path):
    """`train --best` trains the stored config (run in-process: --workers 0, 1 epoch)."""
    from typer.testing import CliRunner

    from emi_ray.cli import app
    from emi_ray.config import load_config
    from emi_ray.tune.best import best_config
    from emi_ray.tune.settings import pointer_path

    res, _ = search
    assert Path(pointer_path("tiny").read_text().strip()) == res.run_dir
    cfg, where = best_config("tiny", None)
    full = Config().train  # best_config restores the default full schedule
    assert cfg.train.epochs == full.epochs and cfg.train.patience == full.patience and str(res.run_dir) in where
    stored = load_config(res.files["best_yaml"])
    assert cfg.model == stored.model and cfg.data == stored.data
    out = tmp_path / "best-run"
    r = CliRunner().invoke(app, ["train", "--best", "--from", str(res.run_dir), "--workers", "0",
                                 "--set", "train.epochs=1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    trained = load_config(out / "config.yaml")
    assert trained.model == stored.model and trained.train.lr_max == stored.train.lr_max
    assert trained.train.epochs == 1


def test_confirm_seeds_on_finished_search(search, store, ray_session, in_home):
    """--resume --confirm-seeds on a finished search: re-trains the top 3 with 2 seeds, best by mean."""
    from emi_ray.config import load_config
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    res, _ = search
    again = run_search(SearchRequest(resume=True, out=res.run_dir, confirm_seeds=2))
    assert again.counts == res.counts  # the finished search is not re-run
    assert len(again.confirm) == 3
    for c in again.confirm:
        assert c["seeds"] == [1, 2] and len(c["scores"]) == 2 and all(s is not None for s in c["scores"])
    best_mean = max(c["mean"] for c in again.confirm)
    assert again.best["confirm"]["mean"] == best_mean
    assert "confirmed" in res.files["best_yaml"].read_text().splitlines()[2]
    assert load_config(again.files["best_yaml"]).model.dim == 16
    summary = json.loads(again.files["summary"].read_text())
    assert summary["best"]["confirm"]["mean"] == best_mean


def test_failing_trials_are_recorded(store, ray_session, in_home, tmp_path):
    """NaN loss (huge lr) and an invalid combination (dim 18 vs 4 heads) fail; the search goes on."""
    import optuna

    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    sp = space_file(tmp_path, "failing", """\
        train.lr_max: {choice: [1.0e-3, 2.0e-3, 1.0e+9]}
        model.fusion_heads: {choice: [4, 2, 3]}
        """, trials=5, epochs=2)
    notes: list[str] = []
    # seed 5: Optuna's seeded start-up draws give ok, invalid (3 heads), NaN (lr 1e9), ok, ok
    res = run_search(SearchRequest(sp, store, seed=5), notify=notes.append)
    failed = [r for r in res.trials if r["status"] == "failed"]
    ok = [r for r in res.trials if r["status"] != "failed"]
    assert res.counts["total"] == 5 and failed and ok, [(r["params"], r["status"]) for r in res.trials]
    for r in failed:
        assert r["params"]["train.lr_max"] > 1 or r["params"]["model.fusion_heads"] == 3
        assert r["error"] and r["mean_pearson"] is None
        kind = "TrainingDiverged" if r["params"]["train.lr_max"] > 1 else "ConfigError"
        assert r["error"].startswith(kind), r["error"]
    assert {r["error"].split(":")[0] for r in failed} == {"TrainingDiverged", "ConfigError"}
    for r in ok:
        assert r["params"]["train.lr_max"] < 1 and r["params"]["model.fusion_heads"] != 3
    assert sum("FAILED" in n for n in notes) == len(failed)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{res.storage}")
    states = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    for r in failed:
        t = states[r["trial_id"]]
        assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("error")
    assert res.best is not None and res.best["trial_id"] in {r["trial_id"] for r in ok}
    assert "error" in res.files["trials_csv"].read_text().splitlines()[0]


DRIVER = """
import sys
from emi_ray.tune.search import run_search
from emi_ray.tune.settings import SearchRequest
run_search(SearchRequest(sys.argv[1], sys.argv[2], out=sys.argv[3], seed=0, address=sys.argv[4]))
"""


def terminated_in_snapshot(exp: Path) -> set[str]:
    """Trial ids that Tune's latest experiment snapshot (experiment_state-*.json) records as TERMINATED."""
    files = sorted(exp.glob("experiment_state-*.json"))
    try:
        data = json.loads(files[-1].read_text()) if files else {"trial_data": []}
    except (OSError, ValueError):  # written while we read: try again on the next poll
        return set()
    done = set()
    for trial_json, _meta in data["trial_data"]:
        t = json.loads(trial_json)
        if t.get("status") == "TERMINATED":
            done.add(t["trial_id"])
    return done


def test_resume_after_killing_the_driver(store, ray_session, in_home, tmp_path):
    """Kill the driver process group once a trial has finished; --resume keeps the finished trials."""
    import optuna

    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    sp = space_file(tmp_path, "resumable", """\
        model.dropout: {uniform: [0.0, 0.3]}
        train.lr_max: {loguniform: [3.0e-4, 3.0e-3]}
        """, trials=6, epochs=12, grace=12)  # grace = max_epochs: no early stopping; trials take seconds
    run = tmp_path / "search-run"
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(sp), str(store), str(run), address],
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    db = run / "optuna.db"
    snapshot_done: set[str] = set()
    try:
        # Kill once Tune's experiment snapshot records a finished trial: what --resume restores
        # is the snapshot, so waiting for it (not for Optuna's record) makes the test deterministic.
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not snapshot_done:
            time.sleep(0.5)
            snapshot_done = terminated_in_snapshot(run / "ray" / "search")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert snapshot_done, (tmp_path / "driver.log").read_text()[-3000:]
    snapshot_done = terminated_in_snapshot(run / "ray" / "search")  # the state --resume will see
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{db}")
    finished = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    finished_ids = {t.user_attrs["tune_trial_id"] for t in study.trials
                    if t.state == optuna.trial.TrialState.COMPLETE}
    assert snapshot_done <= finished_ids
    assert len(finished) < 6, "the driver finished before it was killed: nothing to resume"

    notes: list[str] = []
    res = run_search(SearchRequest(resume=True, out=run), notify=notes.append)
    assert res.resumed and not res.interrupted
    assert any("resuming the search" in n for n in notes), notes  # Tune restored its snapshot
    by_id = {r["trial_id"]: r for r in res.trials}
    for tid in snapshot_done:  # the same Tune trials, not re-run under new ids
        assert by_id[tid]["status"] == "complete" and by_id[tid]["epochs"] == 12
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{db}")
    after = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    for n, v in finished.items():  # finished trials kept, with their values
        assert after.get(n) == pytest.approx(v)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    scored = [r for r in res.trials if r["status"] in ("complete", "stopped early")]
    # Every trial finished before the kill is kept; a trial in flight at the kill may end
    # failed (Optuna marks trials asked after Tune's last snapshot as FAIL), not lost.
    assert res.counts["total"] == 6 and len(scored) >= len(finished), res.trials
    assert res.files["best_yaml"].is_file()


def test_cli_on_finished_search(search, in_home):
    """`emi-ray tune --resume --out RUN --json` on a finished search: nothing re-runs, summary on stdout."""
    from typer.testing import CliRunner

    from emi_ray.cli import app

    res, _ = search
    r = CliRunner().invoke(app, ["tune", "--resume", "--out", str(res.run_dir), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["counts"]["total"] == 8
    # the best of the search, or (after test_confirm_seeds) the best of the top 3 by mean over seeds
    assert summary["best"]["trial_id"] in {r["trial_id"] for r in res.top[:3]}
    r = CliRunner().invoke(app, ["tune", "--resume", "--out", str(res.run_dir)])
    assert r.exit_code == 0, r.output
    for words in ("top trials of tiny", "8 trials:", "best: trial", "next: emi-ray train --best --space tiny",
                  "optuna-dashboard sqlite:///"):
        assert words in r.output, r.output

    from emi_ray.engine.rundir import run_lock

    with run_lock(res.run_dir):  # another `tune --resume` of this search is running: one line, nothing touched
        before = (res.run_dir / "summary.json").read_bytes()
        r = CliRunner().invoke(app, ["tune", "--resume", "--out", str(res.run_dir)])
        assert r.exit_code == 2 and "is in use by pid" in r.output and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert (res.run_dir / "summary.json").read_bytes() == before


def test_stage1_search_pretrains_once_per_stage1_config(media_lite, affect_corpus, ray_session, in_home,
                                                        tmp_path):
    """A search over stage1 keys: each trial pretrains (or reuses) a stage-I run, trains stage II on
    the aligned features, and best.yaml names the best trial's stage-I run; test shards never opened."""
    import shutil

    from emi_ray.config import load_config
    from emi_ray.data.store import FeatureStore
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    feats = tmp_path / "features"
    shutil.copytree(media_lite[1], feats)
    for p in sorted((feats / "shards").glob("test-*.parquet")):
        p.write_bytes(b"not parquet: the search must never open test shards")
    stage1 = {"stage1.epochs": 3, "stage1.batch_size": 32, "stage1.dim": 32, "stage1.lr_max": 3.0e-3,
              "stage1.corpus": str(affect_corpus)}
    sp = space_file(tmp_path, "s1", "stage1.weighted: {choice: [true, false]}\n"
                                    "train.lr_max: {loguniform: [1.0e-3, 3.0e-3]}\n", trials=4, epochs=2)
    sp.write_text(sp.read_text().replace("fixed: {", "fixed: {" + ", ".join(f"{k}: {v}" for k, v in stage1.items())
                                         + ", "))
    res = run_search(SearchRequest(sp, feats, seed=0, out=tmp_path / "run"))
    assert res.counts["failed"] == 0 and res.counts["total"] == 4, res.trials
    weighted = {str(r["params"]["stage1.weighted"]) for r in res.trials}
    runs = [p for p in (tmp_path / "run" / "stage1").iterdir() if p.is_dir()]
    assert len(runs) == len(weighted)  # one stage-I run per distinct stage1 config, reused by the rest
    assert all((p / "heads.pt").is_file() for p in runs)
    best = load_config(res.files["best_yaml"])
    assert best.stage1.run and (best.stage1.run in {str(p) for p in runs})
    assert str(best.stage1.weighted) == str(res.best["params"]["stage1.weighted"])
    assert res.best["mean_pearson"] > 0.0  # 2 tiny epochs: learning is asserted in tests/align
    aligned = FeatureStore(next(p for p in Path(best.stage1.run, "aligned").iterdir() if p.is_dir()))  # not its .lock
    assert aligned.manifest["aligned"]["splits"] == ["train", "valid"]


RAY_LINE = re.compile(r"\(pid=|\(\w+ pid=|^\s*(INFO|WARNING|DEBUG) |\bINFO \w+\.py:\d+")


def test_cli_tune_console_shows_starts_epochs_ends_and_no_ray_lines(store, ray_session, in_home, tmp_path):
    """Off a terminal (CliRunner, CI): one plain line per trial start, epoch and end, with the best so far and
    the time left; Ray's own lines stay in RUN/ray.log."""
    from typer.testing import CliRunner

    from emi_ray.cli import app

    sp = space_file(tmp_path, "watch", "model.dropout: {uniform: [0.0, 0.3]}\n", trials=3, epochs=2)
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["tune", "--space", str(sp), "--features", str(store), "--out", str(run)])
    assert r.exit_code == 0, r.output
    trials = list(csv.DictReader((run / "trials.csv").open()))
    lines = r.output.splitlines()
    started = [i for i, ln in enumerate(lines) if re.match(r"trial \w+ started \(\d running\) \| dropout=", ln)]
    epochs = [i for i, ln in enumerate(lines) if re.match(r"trial \w+ epoch [12]/2: r = -?[\d.]+, best -?[\d.]+; "
                                                           r"\d/3 ended, ", ln)]
    ended = [i for i, ln in enumerate(lines) if re.match(r"trial [123]/3 \w+: r = -?[\d.]+ \(.*\); best so far ", ln)]
    assert len(started) == 3 and len(ended) == 3 and len(epochs) == sum(int(t["epochs"]) for t in trials), r.output
    assert started[0] < epochs[0] < ended[0] < ended[-1] < next(i for i, ln in enumerate(lines) if "top trials" in ln)
    # the time left, while trials remain (by the second end at least 3 trial-epochs have come: an estimate)
    assert re.search(r"; about [\d.]+ (s|min|h) left \|", lines[ended[1]]), lines[ended[1]]
    assert "left" not in lines[ended[2]]
    assert not [ln for ln in lines if RAY_LINE.search(ln)], r.output


def test_cli_ablate_prints_rows_as_they_end_and_keeps_a_failed_row(store, ray_session, in_home, tmp_path,
                                                                   monkeypatch):
    """A row whose config is invalid fails its seeds: shown as they end and as failed in the table (with the
    error), the tables are still written, exit 1; a good row shows mean ± std over the seeds done."""
    from typer.testing import CliRunner

    from emi_ray.cli import app
    from emi_ray.tune import ablation

    monkeypatch.setattr(ablation, "ROWS", [("modules", "base", {**ablation.NO_TFE, **ablation.NO_QAM}, 0.3505),
                                           ("modules", "broken", {"model.fusion_heads": 3}, 0.0)])  # dim 16 / 3
    out = tmp_path / "ablate"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")] + ["--set", "train.epochs=1"]
    r = CliRunner().invoke(app, ["ablate", "--features", str(store), "--seeds", "2", "--table", "modules",
                                 "--out", str(out), *sets])
    assert r.exit_code == 1, r.output
    lines = r.output.splitlines()
    progress = [i for i, ln in enumerate(lines) if re.match(r"\s+(base|broken) seed [01]: ", ln)]
    assert len(progress) == 4, r.output
    assert sum("FAILED: ConfigError" in lines[i] for i in progress) == 2, r.output
    assert not list(out.rglob("error.txt")), "an invalid row reached Ray (Tune would retry it)"
    assert any(re.search(r"\(base: -?[\d.]+ ± [\d.]+ over 2 of 2 seeds done\)", lines[i]) for i in progress), r.output
    table = next(i for i, ln in enumerate(lines) if "mean r" in ln)
    assert max(progress) < table
    text = "\n".join(lines[table:])
    broken = next(ln for ln in lines[table:] if "broken" in ln)
    assert "failed" in broken and "0/2" in broken and "ConfigError" in text
    assert re.search(r"base\s*│\s*-?[\d.]+\s*│", text) and "Traceback" not in r.output
    md = (out / "ablation.md").read_text()
    assert "| broken | failed: ConfigError" in md and re.search(r"\| base \| -?[\d.]+ ± [\d.]+ \|", md)
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["failed"] == 1
    rows = {row["name"]: row for row in summary["rows"]}
    assert rows["broken"]["mean"] is None and rows["broken"]["failed"] == 2
    assert rows["broken"]["error"].startswith("ConfigError")
    assert rows["base"]["failed"] == 0 and len(rows["base"]["scores"]) == 2
    assert (out / "ablation.png").is_file()
    assert not [ln for ln in lines if RAY_LINE.search(ln)], r.output
