"""Trial events: the Tune callback that forwards them, one-line progress, error messages.

The callback is pickled into the experiment (tuner.pkl), so it holds only a key; the listener
for that key lives in this process (`listen`). A listener never breaks a search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
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


class Progress:
    """Turns trial events into one-line progress messages (and passes them on)."""

    def __init__(self, say: Notify, total: int, what: str, mode: str, on_event: Listener | None):
        self.say, self.total, self.what, self.on_event = say, total, what, on_event
        self.done, self.best = 0, None
        self.sign = 1 if mode == "max" else -1
        self.params: dict[str, str] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.on_event:
            self.on_event(event, data)
        tid = data["trial_id"]
        if event == "start":
            self.params[tid] = _short_params(data.get("config") or {})
            return
        if event not in ("complete", "error"):
            return
        self.done += 1
        res = data.get("result") or {}
        epochs = res.get("training_iteration", 0)
        head = f"{self.what} {self.done}/{self.total} {tid}"
        if event == "error":
            self.say(f"{head}: FAILED after {epochs} epochs: {data['error']} | {self.params.get(tid, '')}")
            return
        r = res.get("best_mean_pearson", res.get("mean_pearson"))
        if r is not None and math.isfinite(r) and (self.best is None or self.sign * r > self.sign * self.best):
            self.best = r
        how = f"stopped early after {epochs} epochs" if data.get("stopped_early") else f"{epochs} epochs"
        rs = f"{r:.4f}" if r is not None else "n/a"
        best = f"{self.best:.4f}" if self.best is not None else "n/a"
        self.say(f"{head}: r = {rs} ({how}); best so far {best} | {self.params.get(tid, '')}")


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
