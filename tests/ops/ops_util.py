"""Helpers shared by the tests/ops tests: HTTP APIs (Ray dashboard with its token, optuna-dashboard),
polling, and stopping only the processes a test started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# A tiny stage-II model: a trial or a run takes seconds on the small synthetic store.
TINY = ["model.dim=16", "model.fusion_heads=2", "model.audio_hidden=8", "data.max_len=16",
        "model.dropout=0.0", "train.patience=0", "train.torch_threads=1"]


def free_port() -> int:
    from emi_ray.ops import free_port as fp

    return fp()


def ray_token() -> str | None:
    """The local Ray cluster's auth token (Ray 2.60 token auth), if any."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    return os.environ.get("RAY_AUTH_TOKEN") or (path.read_text().strip() if path.exists() else None)


def get_json(url: str, token: str | None = None, timeout: float = 10) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        return json.loads(r.read())


def ray_api(url: str) -> Any:
    """GET a Ray dashboard API URL with the cluster's token."""
    return get_json(url, ray_token())


def wait_for(probe: Callable[[], Any], timeout: float, what: str, alive: Callable[[], bool] = lambda: True,
             every: float = 0.3) -> Any:
    """Call `probe` until it returns something truthy (OSError and ValueError count as 'not yet')."""
    deadline = time.time() + timeout
    while True:
        try:
            got = probe()
            if got:
                return got
        except (OSError, ValueError):
            pass
        if time.time() > deadline or not alive():
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s" + ("" if alive() else
                                                                              " (the process ended)"))
        time.sleep(every)


def stop_session(p: subprocess.Popen, sig: int = signal.SIGINT, wait: float = 10) -> None:
    """Stop a process started with start_new_session=True, then SIGKILL whatever is left of its session."""
    for s, w in ((sig, wait), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, s)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=w)
        except subprocess.TimeoutExpired:
            pass


def start_optuna_dashboard(run: Path, port: int, log: Path) -> subprocess.Popen:
    """`emi-ray dashboard RUN --port PORT` in its own session (stop it with stop_session)."""
    return subprocess.Popen([sys.executable, "-m", "emi_ray", "dashboard", str(run), "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True)


def optuna_trials(base: str, study_name: str = "search") -> list[dict]:
    """The trials of `study_name` as optuna-dashboard's API serves them ([] before the study exists)."""
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    study = next((s for s in studies if s["study_name"] == study_name), None)
    if study is None:
        return []
    return get_json(f"{base}/api/studies/{study['study_id']}")["trials"]


def tiny_space(root, trials: int, epochs: int, concurrency: int):
    """A search space over two cheap parameters; grace = max_epochs, so no trial stops early."""
    fixed = ", ".join(s.replace("=", ": ") for s in TINY)
    p = root / "tiny.yaml"
    p.write_text(textwrap.dedent(f"""\
        trials: {trials}
        max_epochs: {epochs}
        concurrency: {concurrency}
        scheduler: {{kind: asha, grace_period: {epochs}, reduction_factor: 2}}
        fixed: {{{fixed}}}
        params:
          model.dropout: {{uniform: [0.0, 0.3]}}
          train.lr_max: {{loguniform: [1.0e-3, 3.0e-3]}}
        """))
    return p


def make_study(path, n=5):
    """A finished Optuna study "search" of n trials in a sqlite or journal file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from emi_ray.ops import open_storage

    study = optuna.create_study(study_name="search", storage=open_storage(path), direction="maximize")
    study.optimize(lambda t: -(t.suggest_float("lr", 1e-4, 1e-1, log=True) - 0.01) ** 2, n_trials=n)
    return study


def kill_strays(temp_dir: str) -> None:
    """SIGKILL any process (not this one) whose command line names `temp_dir`: what a test's Ray left behind."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmd and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
