"""`emi-ray dashboard --host`: IPv6 loopback works (it used to end in a socket.gaierror traceback),
and a host it cannot bind is one line on stderr with exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from ops_util import get_json, make_study, stop_session


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "optuna.db"
    make_study(path, n=2)
    return path


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_dashboard_on_ipv6_loopback(study, tmp_path):
    log = tmp_path / "dash.log"
    p = subprocess.Popen([sys.executable, "-m", "emi_ray", "dashboard", str(study), "--host", "::1", "--port", "0"],
                         stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, url = time.time() + 60, None
        while url is None:
            for line in log.read_text().splitlines():
                if line.startswith("open http://[::1]:"):
                    url = line.split()[1]
            assert p.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.3)
        while True:
            try:
                studies = get_json(f"{url}api/studies")["study_summaries"]
                break
            except OSError:
                assert p.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["search"]
    finally:
        stop_session(p)


@pytest.mark.parametrize("host, message", [
    ("no-such-host.invalid", "not a host name or address"),
    ("192.0.2.250", "cannot listen on 192.0.2.250"),  # TEST-NET-1: not an address of this machine
])
def test_dashboard_bad_host_is_one_line(study, host, message):
    if message.startswith("cannot listen"):
        with socket.socket() as s:
            try:
                s.bind((host, 0))
                pytest.skip(f"{host} is an address of this machine")
            except OSError:
                pass
    r = subprocess.run([sys.executable, "-m", "emi_ray", "dashboard", str(study), "--host", host, "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr
