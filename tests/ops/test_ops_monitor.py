"""Monitoring a live search: both dashboards' HTTP APIs show the trials while `emi-ray tune` runs.

`emi-ray tune` starts its own local Ray (dashboard on 127.0.0.1, token auth) and prints the
dashboard URL; the test reads the Ray dashboard's jobs and state APIs (with the token) and
finds the driver and the trial actors, then starts `emi-ray dashboard RUN` and finds the
study's trials through optuna-dashboard's API, all while the search is still running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from ops_util import free_port, optuna_trials, ray_api, start_optuna_dashboard, stop_session, tiny_space, wait_for

pytestmark = pytest.mark.slow

TRIALS, EPOCHS = 20, 8  # far more than the test waits for: it stops the search


def test_both_dashboards_show_the_trials_of_a_running_search(small_synth_store, tmp_path):
    run = tmp_path / "search"
    log = tmp_path / "tune.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    search = subprocess.Popen(
        [sys.executable, "-m", "emi_ray", "tune", "--space", str(tiny_space(tmp_path, TRIALS, EPOCHS, 2)),
         "--features", str(small_synth_store), "--out", str(run)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    dash = None
    running = lambda: search.poll() is None  # noqa: E731
    try:
        # optuna-dashboard on the run directory as soon as the study file exists.
        wait_for(lambda: (run / "optuna.db").is_file(), 180, "RUN/optuna.db", running)
        port = free_port()
        dash = start_optuna_dashboard(run, port, tmp_path / "dashboard.log")
        # The Ray dashboard URL the command prints (127.0.0.1, a port Ray chose).
        url = wait_for(lambda: re.search(r"Ray dashboard:\s+(http://\S+)", log.read_text()), 60,
                       "the Ray dashboard URL in the output of emi-ray tune", running).group(1)
        assert url.startswith("http://127.0.0.1:"), url
        # Its jobs API lists the search's driver, its state API the trial actors (Tune's function
        # trainable actor, class ImplicitFunc, shows as `train_trial`).
        drivers = wait_for(lambda: [j for j in ray_api(f"{url}/api/jobs/") if j.get("type") == "DRIVER"
                                    and "tune" in (j.get("entrypoint") or "")], 60, "the tune driver job", running)
        assert drivers[0]["status"] == "RUNNING"

        def trial_actors():
            rows = ray_api(f"{url}/api/v0/actors?limit=1000&detail=1")["data"]["result"]["result"]
            return [a for a in rows if a.get("repr_name") == "train_trial" and a["state"] == "ALIVE"]

        actors = wait_for(trial_actors, 120, "ALIVE trial actors in the Ray state API", running)
        assert all(a["pid"] for a in actors), actors
        # optuna-dashboard's API: the study's trials, one or two of them running.
        base = f"http://127.0.0.1:{port}"
        live = wait_for(lambda: [t for t in optuna_trials(base) if t["state"] == "Running"], 120,
                        "running trials in optuna-dashboard", lambda: dash.poll() is None and running())
        assert 1 <= len(live) <= 2 and all(t["params"] for t in live), live
        assert running(), "the search ended before both dashboards were read"
        # Enough seen: stop the search (Ctrl-C); the study keeps what finished.
        stop_session(search)
        done = [t for t in optuna_trials(base) if t["state"] == "Complete"]
        assert all(len(t["intermediate_values"]) >= 1 for t in done)
    finally:
        stop_session(search)
        if dash is not None:
            stop_session(dash)
