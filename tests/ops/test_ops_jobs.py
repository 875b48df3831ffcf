"""`ray start --head` on this machine, `ray job submit` (jobs/_submit.sh) of `emi-ray train`, find its results.

The cluster is isolated from other Ray instances on the machine: its own --temp-dir (so its
address file is not where a plain `ray.init()` looks), its own ports, and it runs in its
own session, which teardown kills by process group (never `ray stop`, which stops every
Ray instance of the machine). Token auth is on, with a token of its own (RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN_PATH in the module's temp dir) that every client here sends: the cluster does
not depend on this machine's ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ops_util import ROOT, free_port, get_json, kill_strays, stop_session
from ops_util import TINY as TINY_MODEL

pytestmark = pytest.mark.slow

TINY = [*TINY_MODEL, "train.epochs=3"]


def kill_session(p: subprocess.Popen, temp_dir: str) -> None:
    """Stop only the Ray processes this test started: its session, then any stray pid naming its temp dir."""
    stop_session(p, signal.SIGTERM)
    kill_strays(temp_dir)


@pytest.fixture(scope="module")
def head():
    if not shutil.which("ray"):
        pytest.skip("the `ray` command is not on PATH")
    temp_dir = tempfile.mkdtemp(prefix="eo", dir="/tmp")  # short: Ray's unix sockets live under it
    ports = {k: free_port() for k in ("gcs", "dash", "client", "agent", "metrics")}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the job finds `emi-ray`
    token = secrets.token_hex(32)
    token_file = Path(temp_dir) / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))  # head, drivers and clients
    log = open(Path(temp_dir) / "ray-start.log", "w")
    p = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--temp-dir={temp_dir}", f"--port={ports['gcs']}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dash']}",
         f"--ray-client-server-port={ports['client']}", f"--dashboard-agent-listen-port={ports['agent']}",
         f"--metrics-export-port={ports['metrics']}", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dash']}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                get_json(f"{url}/api/jobs/", token)
                break
            except OSError:
                if p.poll() is not None or time.time() > deadline:
                    pytest.fail("ray start --head did not come up:\n"
                                + (Path(temp_dir) / "ray-start.log").read_text()[-3000:])
                time.sleep(1)
        yield {"url": url, "gcs": f"127.0.0.1:{ports['gcs']}", "env": env, "temp_dir": temp_dir, "token": token}
    finally:
        kill_session(p, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def store(small_synth_store):
    return small_synth_store


def test_job_submit_train_finds_results(head, store, tmp_path):
    runtime_env = tmp_path / "runtime_env.yaml"  # jobs/runtime_env.yaml, but the home in tmp, not /mnt/emi
    runtime_env.write_text((ROOT / "jobs/runtime_env.yaml").read_text()
                           .replace("/mnt/emi/emi-home", str(tmp_path / "emi-home")))
    out = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    env = {**head["env"], "RAY_ADDRESS": head["url"], "EMI_RUNTIME_ENV": str(runtime_env)}
    r = subprocess.run(["bash", str(ROOT / "jobs/_submit.sh"), "test-train", "--", "emi-ray", "train",
                        "--workers", "1", "--features", str(store), "--out", str(out), "--json", *sets],
                       env=env, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and -1 <= metrics["mean_pearson"] <= 1
    assert (out / "best.pt").exists() and (out / "history.csv").exists()
    # The job shows in the dashboard's jobs API (with the token), finished.
    jobs = [j for j in get_json(f"{head['url']}/api/jobs/", head["token"]) if (j.get("submission_id") or "").startswith("emi-test-train")]
    assert jobs and jobs[-1]["status"] == "SUCCEEDED", jobs
    assert "emi-ray train" in jobs[-1]["entrypoint"]


def test_address_joins_running_cluster(head, store, tmp_path):
    """`emi-ray train --address HOST:PORT` runs its workers on the given cluster (not a new local one)."""
    out = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    env = head["env"]
    r = subprocess.run([sys.executable, "-m", "emi_ray", "train", "--address", head["gcs"], "--workers", "1",
                        "--features", str(store), "--out", str(out), "--json", *sets],
                       env=env, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3
    drivers = [j for j in get_json(f"{head['url']}/api/jobs/", head["token"]) if j.get("type") == "DRIVER"
               and "emi_ray" in (j.get("entrypoint") or "") and "--address" in (j.get("entrypoint") or "")]
    assert drivers, "the driver did not register with the given cluster"


def test_job_submit_tune_finds_trials(head, store, tmp_path):
    """A small `emi-ray tune` submitted as a job: its study and best config land in --out."""
    import optuna

    runtime_env = tmp_path / "runtime_env.yaml"
    runtime_env.write_text((ROOT / "jobs/runtime_env.yaml").read_text()
                           .replace("/mnt/emi/emi-home", str(tmp_path / "emi-home")))
    out = tmp_path / "search"
    sets = [a for s in TINY if not s.startswith("train.epochs") for a in ("--set", s)]
    env = {**head["env"], "RAY_ADDRESS": head["url"], "EMI_RUNTIME_ENV": str(runtime_env)}
    r = subprocess.run(["bash", str(ROOT / "jobs/_submit.sh"), "test-tune", "--", "emi-ray", "tune",
                        "--space", "fusion", "--trials", "2", "--max-epochs", "2", "--concurrency", "1",
                        "--features", str(store), "--out", str(out), *sets],
                       env=env, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 2
    assert (out / "best.yaml").is_file()
    jobs = [j for j in get_json(f"{head['url']}/api/jobs/", head["token"]) if (j.get("submission_id") or "").startswith("emi-test-tune")]
    assert jobs and jobs[-1]["status"] == "SUCCEEDED", jobs


def test_ablate_address_joins_running_cluster(head, store, tmp_path):
    out = tmp_path / "ablate"
    sets = [a for s in [*TINY[:-2], "train.epochs=1"] for a in ("--set", s)]
    env = head["env"]
    r = subprocess.run([sys.executable, "-m", "emi_ray", "ablate", "--address", head["gcs"], "--table", "modules",
                        "--seeds", "1", "--features", str(store), "--out", str(out), *sets],
                       env=env, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert len(json.loads((out / "ablation.json").read_text())["rows"]) == 4
    drivers = [j for j in get_json(f"{head['url']}/api/jobs/", head["token"]) if j.get("type") == "DRIVER"
               and "ablate" in (j.get("entrypoint") or "")]
    assert drivers, "the ablate driver did not register with the given cluster"
