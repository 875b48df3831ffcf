"""Per-epoch progress that a person can watch while a run trains.

Rank 0 of a run appends each epoch's metrics to RUN/progress.jsonl and rewrites
RUN/history.csv (and the learning curve) from it as the epoch ends; the driver follows
that file in a thread and hands each new epoch to the caller's `on_epoch` (the CLI prints
it). The worker writes only when RUN is visible where it runs (the driver's machine, or a
shared file system); elsewhere the run still finishes and writes its outputs at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emi_ray.distributed import world
from emi_ray.engine.outputs import write_history
from emi_ray.engine.report import Report

PROGRESS = "progress.jsonl"
CURVE_EVERY_S = 10.0  # redraw curve.png at most this often while training (matplotlib costs ~0.1 s)
OnEpoch = Callable[[dict[str, Any]], None]


def read_progress(run_dir: Path) -> list[dict[str, Any]]:
    """The epochs recorded so far, one per epoch (a resumed run's re-run epochs replace the old)."""
    path = Path(run_dir) / PROGRESS
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line being written
            continue
        by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


class Recording:
    """A `report` that also records each epoch in RUN (rank 0 only): appended to RUN/progress.jsonl,
    RUN/history.csv rewritten (and curve.png, at most every CURVE_EVERY_S)."""

    def __init__(self, report: Report, run_dir: Path, curve: bool = True):
        self.report, self.run, self.curve, self.drawn = report, run_dir, curve, 0.0

    def __call__(self, metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        self.report(metrics, ckpt_dir)
        if ckpt_dir is None and (self.run / PROGRESS).is_file():
            return  # a finished run re-reporting its last epoch
        self.progress_only(metrics)

    def progress_only(self, metrics: dict[str, Any]) -> None:
        with open(self.run / PROGRESS, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        draw = self.curve and time.monotonic() - self.drawn >= CURVE_EVERY_S
        write_history(self.run, read_progress(self.run), curve=draw)
        if draw:
            self.drawn = time.monotonic()


def recording(report: Report, run_dir: str | Path | None, curve: bool = True) -> Report:
    """`report`, recording each epoch in RUN when this is rank 0 and RUN is visible here."""
    run = Path(run_dir) if run_dir else None
    if run is None or not run.is_dir() or world()[0] != 0:
        return report
    return Recording(report, run, curve)


class ProgressWatcher:
    """Follows RUN/progress.jsonl while a run trains; calls `on_epoch` once per new epoch, in order."""

    def __init__(self, run_dir: Path, on_epoch: OnEpoch | None, interval_s: float = 0.5):
        self.run_dir, self.on_epoch, self.interval_s = Path(run_dir), on_epoch, interval_s
        self.seen = {int(r["epoch"]) for r in read_progress(self.run_dir)}  # a resumed run's earlier epochs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="emi-progress", daemon=True)

    def _emit_new(self) -> None:
        for row in read_progress(self.run_dir):
            if int(row["epoch"]) not in self.seen:
                self.seen.add(int(row["epoch"]))
                self.on_epoch(row)

    def _follow(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit_new()

    def __enter__(self) -> ProgressWatcher:
        if self.on_epoch is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.on_epoch is not None:
            self._stop.set()
            self._thread.join()
            self._emit_new()  # the last epochs, reported just before fit returned
