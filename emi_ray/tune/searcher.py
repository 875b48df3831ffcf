"""OptunaSearch with a persistent study that survives `Tuner.restore`, and Tune callbacks.

ray-2.60-notes.md §c/§d: OptunaSearch takes a storage *object*; after a restore the
searcher is older than the storage file, so re-reported results of trials that are already
COMPLETE raise `UpdateFinishedTrialError` (tolerated here), and trials asked after Tune's
last snapshot stay RUNNING for ever (marked FAIL here, right after the restore).

Failed trials: Tune tells the searcher `on_trial_complete(error=True)` and only then
calls the callbacks' `on_trial_error` with the trial (and its error). The searcher defers
the FAIL until the callback hands it the message, so the study records *why* a trial
failed (user attribute `error`, visible in optuna-dashboard).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

# Module-level, so the pickled callback (Tune stores it in tuner.pkl) finds them again after a restore.
_PENDING_FAIL: dict[str, SafeOptunaSearch] = {}
_LISTENERS: dict[str, Callable[[str, dict[str, Any]], None]] = {}


class SafeOptunaSearch(OptunaSearch):
    """OptunaSearch that tolerates a restore over a persistent study (see module docstring)."""

    def suggest(self, trial_id: str):
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            try:
                ot_trial.set_user_attr("tune_trial_id", trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            with warnings.catch_warnings():  # a trial restarted after a restore re-reports its first steps
                warnings.filterwarnings("ignore", message=".*is already reported")
                super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            _PENDING_FAIL[trial_id] = self  # the callback's on_trial_error follows with the message
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def fail_trial(self, trial_id: str, message: str | None) -> None:
        """Record a failed trial as FAIL in the study, with its error message."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        try:
            if message:
                ot_trial.set_user_attr("error", message[:1000])
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.FAIL)
        except Exception as exc:  # already finished in storage (a re-run after restore)
            logger.debug("fail_trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.mark_stale_running()

    def mark_stale_running(self) -> list[int]:
        """FAIL the study's RUNNING trials that no Tune trial will ever complete."""
        live = {t.number for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
        return mark_stale(self._ot_study, keep=live)


def mark_stale(study: optuna.Study, keep: set[int] = frozenset()) -> list[int]:
    storage = study._storage
    stale = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number in keep:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "error", "interrupted: the search driver stopped "
                                                              "before this trial finished")
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            stale.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return stale


def flush_pending_failures() -> None:
    """FAIL trials whose on_trial_error never came (so none stays RUNNING in the study)."""
    for trial_id, searcher in list(_PENDING_FAIL.items()):
        _PENDING_FAIL.pop(trial_id, None)
        searcher.fail_trial(trial_id, None)


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
    """Forwards trial events to a listener registered under `key` (picklable: holds only the key)."""

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
        searcher = _PENDING_FAIL.pop(trial.trial_id, None)
        if searcher is not None:
            searcher.fail_trial(trial.trial_id, message)
        self._emit("error", trial_id=trial.trial_id, error=message, result=trial.last_result or {})


def listen(key: str, fn: Callable[[str, dict[str, Any]], None] | None) -> None:
    if fn is None:
        _LISTENERS.pop(key, None)
    else:
        _LISTENERS[key] = fn
