"""Trial events: the Tune callback that forwards them, the board of trials, one-line progress, error messages.

The callback is pickled into the experiment (tuner.pkl), so it holds only a key; the listener
for that key lives in this process (`listen`). A listener never breaks a search.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from emi_ray.tune.study import fail_pending, publish_study
from emi_ray.tune.trial import split_config

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]
Listener = Callable[[str, dict[str, Any]], None]  # (event: start|result|complete|error, data)

# Module-level, so the pickled callback finds its listener again after a restore.
_LISTENERS: dict[str, Listener] = {}


def listen(key: str, fn: Listener | None) -> None:
    if fn is None:
        _LISTENERS.pop(key, None)
    else:
        _LISTENERS[key] = fn


def error_message(exc: BaseException | None) -> str:
    """One line: the user's exception inside Ray's wrappers (RayTaskError.cause)."""
    if exc is None:
        return ""
    seen = 0
    while seen < 5 and getattr(exc, "cause", None) is not None and exc.cause is not exc:
        exc = exc.cause
        seen += 1
    text = str(exc).strip().splitlines()
    last = next((ln for ln in reversed(text) if ln.strip()), "") if text else ""
    msg = text[0] if type(exc).__name__ not in ("RayTaskError", "TuneError") else last
    return f"{type(exc).__name__}: {msg}"[:500]


def trial_error(trial) -> str:
    try:
        exc = trial.get_pickled_error()
        if exc is not None:
            return error_message(exc)
    except Exception:  # noqa: BLE001 - unpicklable error: fall back to the text trace
        pass
    try:
        exc = trial.get_error()
        lines = [ln for ln in str(exc).splitlines() if ln.strip()] if exc else []
        return lines[-1][:500] if lines else "failed"
    except Exception:  # noqa: BLE001
        return "failed"


class TrialEvents(Callback):
    """Forwards trial events to the listener registered under `key` (picklable: holds only the key)."""

    def __init__(self, key: str, max_epochs: int):
        self.key = key
        self.max_epochs = max_epochs

    def _emit(self, event: str, **data: Any) -> None:
        fn = _LISTENERS.get(self.key)
        if fn is not None:
            try:
                fn(event, data)
            except Exception:  # noqa: BLE001 - a listener must never break the search
                logger.exception("trial event listener failed")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._emit("start", trial_id=trial.trial_id, config=trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._emit("result", trial_id=trial.trial_id, result=result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        res = trial.last_result or {}
        self._emit("complete", trial_id=trial.trial_id, result=res,
                   stopped_early=res.get("training_iteration", 0) < self.max_epochs)

    def on_trial_error(self, iteration, trials, trial, **info):
        message = trial_error(trial)
        fail_pending(trial.trial_id, message)  # the study records why the trial failed
        self._emit("error", trial_id=trial.trial_id, error=message, result=trial.last_result or {})


def _short_params(config: dict[str, Any]) -> str:
    """'fusion=mean dim=64 ...': a trial's sampled values, or a grid point's overrides."""
    spec, sampled = split_config(config) if config else (None, {})
    out = []
    for k, v in {**(spec.overrides if spec else {}), **sampled}.items():
        name = k.split(".", 1)[1]
        out.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(out)


def duration(s: float) -> str:
    """'45 s', '12 min', '2.5 h'."""
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _score(result: dict[str, Any]) -> float | None:
    """A result's best validation mean r so far (older results: that epoch's)."""
    r = result.get("best_mean_pearson", result.get("mean_pearson"))
    return float(r) if r is not None and math.isfinite(r) else None


@dataclass
class TrialLine:
    """One trial as the board shows it."""

    trial_id: str
    params: str
    started: float  # time.monotonic()
    status: str = "running"  # running | complete | stopped early | failed
    epochs: int = 0  # epochs reported
    r: float | None = None  # the latest epoch's validation mean r
    best: float | None = None  # the best epoch's so far (the trial's score)
    error: str = ""
    ended: float | None = None


def asha_expected_epochs(max_epochs: int, grace: int, reduction: float) -> float:
    """The epochs a trial runs on average under ASHA once its rungs have filled: every trial runs to
    the first rung (grace), 1/reduction of them on to the next, and so on up to max_epochs. Early
    trials meet empty rungs and run further, so this is the long-run figure, not a bound."""
    if reduction <= 1 or grace >= max_epochs:
        return float(max_epochs)
    expect, rung, share = float(grace), float(grace), 1.0
    while rung < max_epochs:
        share /= reduction
        nxt = min(rung * reduction, float(max_epochs))
        expect += share * (nxt - rung)
        rung = nxt
    return expect


class Board:
    """The state of the trials of one experiment, from its events: running and ended trials, the best so
    far, an ETA. The CLI draws it (a live table on a terminal); it never prints."""

    def __init__(self, what: str, total: int, max_epochs: int, mode: str = "max", done: int = 0,
                 expected_epochs: float | None = None):
        self.what, self.total, self.max_epochs = what, total, max_epochs
        # the epochs a trial is expected to run before any has ended (ASHA: asha_expected_epochs)
        self.expected_epochs = float(expected_epochs if expected_epochs is not None else max_epochs)
        self.sign = 1 if mode == "max" else -1
        self.done = done  # ended trials, those of an earlier session of a resumed search included
        self.t0 = time.monotonic()
        self.trials: dict[str, TrialLine] = {}
        self.epochs_seen = 0  # trial-epochs reported in this session
        self.first_epoch_at: float | None = None  # when the first of them arrived
        self.best: TrialLine | None = None

    def update(self, event: str, data: dict[str, Any]) -> TrialLine:
        tid = data["trial_id"]
        t = self.trials.get(tid)
        if t is None:
            t = self.trials[tid] = TrialLine(tid, _short_params(data.get("config") or {}), time.monotonic())
        res = data.get("result") or {}
        if event == "result":
            t.epochs = int(res.get("training_iteration", t.epochs + 1))
            r = res.get("mean_pearson")
            t.r = float(r) if r is not None else None
            t.best = _score(res)
            self.epochs_seen += 1
            if self.first_epoch_at is None:
                self.first_epoch_at = time.monotonic()
        elif event in ("complete", "error"):
            self.done += 1
            t.ended = time.monotonic()
            t.epochs = int(res.get("training_iteration", t.epochs))
            if event == "error":
                t.status, t.error = "failed", data.get("error", "")
            else:
                t.status = "stopped early" if data.get("stopped_early") else "complete"
                t.best = _score(res) if res else t.best
                # The best so far: a trial that ran all epochs (the one Optuna crowns and best.yaml keeps);
                # an early-stopped one only while none has.
                if t.best is not None and (self.best is None or self._better(t, self.best)):
                    self.best = t
        return t

    def _better(self, a: TrialLine, b: TrialLine) -> bool:
        if (a.status == "complete") != (b.status == "complete"):
            return a.status == "complete"
        return self.sign * a.best > self.sign * b.best

    @property
    def running(self) -> list[TrialLine]:
        return [t for t in self.trials.values() if t.status == "running"]

    @property
    def ended(self) -> list[TrialLine]:
        """This session's ended trials, latest first."""
        return sorted((t for t in self.trials.values() if t.ended is not None), key=lambda t: -t.ended)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def eta_s(self, min_epochs: int = 3) -> float | None:
        """Seconds left: the trial-epochs still expected at this session's rate of trial-epochs per second.

        A trial is expected to run as many epochs as the ended trials did on average (ASHA stops some
        early); while none has ended, `expected_epochs` (the ASHA schedule's average, else max_epochs).
        The rate counts from the first epoch's arrival (Ray's
        start and the first trials' cold start are behind by then); None before `min_epochs` epochs.
        """
        if self.epochs_seen < min_epochs or self.first_epoch_at is None:
            return None
        since = time.monotonic() - self.first_epoch_at
        if since <= 0:
            return None
        ended = [t.epochs for t in self.trials.values() if t.ended is not None]
        expect = sum(ended) / len(ended) if ended else self.expected_epochs
        left = sum(max(expect, min(self.max_epochs, t.epochs + 1)) - t.epochs for t in self.running)
        left += max(0, self.total - self.done - len(self.running)) * expect
        return left * since / (self.epochs_seen - 1)

    def eta(self) -> str:
        eta = self.eta_s()
        if self.done >= self.total:
            return "done"
        return "estimating time left" if eta is None else f"about {duration(eta)} left"

    def line(self, event: str, data: dict[str, Any]) -> str | None:
        """A plain line for a trial's start or epoch (its end is Progress's line)."""
        t = self.trials.get(data.get("trial_id"))
        if t is None:
            return None
        if event == "start":
            return f"{self.what} {t.trial_id} started ({len(self.running)} running) | {t.params}"
        if event == "result":
            r = "n/a" if t.r is None else f"{t.r:.4f}"
            best = "n/a" if t.best is None else f"{t.best:.4f}"
            return (f"{self.what} {t.trial_id} epoch {t.epochs}/{self.max_epochs}: r = {r}, best {best}; "
                    f"{self.done}/{self.total} ended, {self.eta()}")
        return None


class Progress:
    """Turns trial events into one-line progress messages for the trials that end (and passes the events
    on, each with the `Board` as data["board"])."""

    def __init__(self, say: Notify, total: int, what: str, mode: str, on_event: Listener | None,
                 max_epochs: int = 0, expected_epochs: float | None = None):
        self.say, self.total, self.what, self.on_event = say, total, what, on_event
        self.board = Board(what, total, max_epochs, mode, expected_epochs=expected_epochs)

    @property
    def done(self) -> int:
        return self.board.done

    @done.setter
    def done(self, n: int) -> None:  # a resumed search: the trials of its earlier sessions
        self.board.done = n

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        t = self.board.update(event, data)
        if self.on_event:
            self.on_event(event, {**data, "board": self.board})
        if event not in ("complete", "error"):
            return
        head = f"{self.what} {self.done}/{self.total} {t.trial_id}"
        if event == "error":
            self.say(f"{head}: FAILED after {t.epochs} epochs: {t.error} | {t.params}")
            return
        how = f"stopped early after {t.epochs} epochs" if t.status == "stopped early" else f"{t.epochs} epochs"
        rs = f"{t.best:.4f}" if t.best is not None else "n/a"
        b = self.board.best
        best = f"{b.best:.4f}" if b is not None else "n/a"
        left = "" if self.done >= self.total else f"; {self.board.eta()}"
        self.say(f"{head}: r = {rs} ({how}); best so far {best}{left} | {t.params}")


def publishing(progress: Listener, run_dir: Path, storage: str | None, say: Notify) -> Listener:
    """The trial-event listener: `progress`, and with --storage the study copied after every ended trial."""
    if not storage:
        return progress

    def listener(event: str, data: dict[str, Any]) -> None:
        progress(event, data)
        if event in ("complete", "error"):
            try:
                publish_study(run_dir, storage)
            except OSError as e:  # the next ended trial (or the end of the search) tries again
                say(f"could not copy optuna.db to {storage}: {e}")

    return listener
