"""`emi-ray dashboard RUN`: optuna-dashboard on a search's study, bound to 127.0.0.1."""

from __future__ import annotations

import urllib.request

import pytest
from ops_util import free_port, make_study, optuna_trials, start_optuna_dashboard, stop_session, wait_for
from typer.testing import CliRunner

from emi_ray.cli import app


def test_find_study_storage(tmp_path):
    from emi_ray.errors import InputError
    from emi_ray.ops import find_study_storage

    run = tmp_path / "tune-run"
    run.mkdir()
    with pytest.raises(InputError, match="no Optuna study storage"):
        find_study_storage(run)
    (run / "optuna.db").write_bytes(b"")
    assert find_study_storage(run) == (run / "optuna.db").resolve()
    assert find_study_storage(run / "optuna.db") == (run / "optuna.db").resolve()
    with pytest.raises(InputError, match="no such"):
        find_study_storage(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not an Optuna storage"):
        find_study_storage(tmp_path / "notes.txt")


def test_dashboard_cli_errors_in_one_line(tmp_path):
    r = CliRunner().invoke(app, ["dashboard", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such search run directory" in r.output


@pytest.mark.parametrize("journal", [False, True], ids=["sqlite", "journal"])
def test_dashboard_serves_study_api(tmp_path, journal):
    run = tmp_path / "tune-run"
    run.mkdir()
    make_study(run / ("optuna.journal" if journal else "optuna.db"), n=5)
    port = free_port()
    log = tmp_path / "dashboard.log"
    p = start_optuna_dashboard(run, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        trials = wait_for(lambda: optuna_trials(base), 90, "the study in optuna-dashboard",
                          lambda: p.poll() is None)
        assert len(trials) == 5 and all(t["state"] == "Complete" for t in trials)
        # bound to loopback only: the machine's other addresses refuse it
        import socket

        lan = socket.gethostbyname(socket.gethostname())
        if not lan.startswith("127."):
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{lan}:{port}/api/studies", timeout=3)
    finally:
        stop_session(p)
    assert f"http://127.0.0.1:{port}/" in log.read_text()
