"""Starting or joining Ray the same way from every command, and where Ray's own log lines go.

The console is for people: unless `emi-ray --verbose` (EMI_RAY_VERBOSE=1), Ray's driver log
lines and the output its workers forward to the driver go to a log file (the run's ray.log
once a run directory exists, EMI_RAY_HOME/logs/ray.log before), not to the terminal.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ray
from ray._private.ray_logging import global_worker_stdstream_dispatcher

from emi_ray import VERBOSE_ENV
from emi_ray.io import home

RAY_LOG = "ray.log"
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"
_RAY_PRINTER = "ray_print_logs"  # the name Ray gives its handler that prints worker output on the driver
_OURS = "emi_ray_log_file"
_sink: dict[str, Path | None] = {"path": None}


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _append(lines: list[str]) -> None:
    path = _sink["path"] or home() / "logs" / RAY_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(f"{line}\n" for line in lines)


def _worker_output(data: dict) -> None:
    who = data.get("actor_name") or data.get("task_name") or "worker"
    _append([f"({who} pid={data.get('pid')}) {line}" for line in data.get("lines", [])])


class _FileHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        _append([f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"])


def log_ray_to(path: str | Path | None) -> None:
    """Send Ray's log lines to `path` from now on (None: EMI_RAY_HOME/logs/ray.log); a no-op with --verbose."""
    if verbose():
        return
    _sink["path"] = None if path is None else Path(path)
    root = logging.getLogger("ray")
    if not any(isinstance(h, _FileHandler) for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_FileHandler())
        root.propagate = False
    global_worker_stdstream_dispatcher.remove_handler(_RAY_PRINTER)
    global_worker_stdstream_dispatcher.remove_handler(_OURS)
    global_worker_stdstream_dispatcher.add_handler(_OURS, _worker_output)


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> str | None:
    """Join `address` (or $RAY_ADDRESS) if given, else start a local Ray.

    Returns the dashboard URL. The dashboard stays on (Ray Train's placement-group cleanup needs its State API) and
    binds to 127.0.0.1: an exposed dashboard/jobs API runs anyone's code.
    """
    if ray.is_initialized():
        return None
    log_ray_to(_sink["path"])  # before ray.init: its own warnings go there too
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # Ray Train's controller polls its workers every 2 s by default and a worker's report waits for
    # that poll: ~2 s per epoch against ~0.1 s of a stage-I epoch. Set before Ray starts (the local
    # raylet and its actors inherit it); a cluster started with `ray start` keeps its own setting.
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, **kwargs)
    else:
        # address="local": always a fresh local Ray, never a stale cluster some other
        # process left in /tmp/ray (ray.init's default would try to join it).
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level="WARNING", **kwargs)
    log_ray_to(_sink["path"])  # ray.init registered its console printer of worker output: replace it
    url = ctx.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url

