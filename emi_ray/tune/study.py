"""The Optuna side of a search: the sampler, a searcher over a persistent study, stale trials, its copy.

The objective: every epoch a trial reports `best_mean_pearson`, the best validation mean r so
far (the value of the model the trial keeps); the searcher records it as the epoch's
intermediate value and tells it as the trial's value. A trial ASHA stopped before max_epochs is
told PRUNED (Optuna's value: its last intermediate value, i.e. its best r; user attribute
`stopped_at_epoch`); a trial that ran all epochs COMPLETE. So the study's best trial (and
optuna-dashboard's) is the best trial that ran all epochs: the one best.yaml keeps.

Ray Tune's OptunaSearch (Ray 2.60) needs a storage *object* (not a URL). After a restore the
searcher is older than the storage file: results re-reported for trials that are already
finished in the study raise `UpdateFinishedTrialError` (tolerated here), and trials asked after
Tune's last snapshot stay RUNNING for ever (marked FAIL here, right after the restore). Tune
never passes the result that made the scheduler stop a trial (ASHA's stop, or max_t) to the
searcher's `on_trial_result`: `on_trial_complete` reports that last epoch itself.

Failed trials: Tune tells the searcher `on_trial_complete(error=True)` and only then
calls the callbacks' `on_trial_error` with the trial (and its error). The searcher defers
the FAIL until the callback (events.TrialEvents) hands it the message, so the study records
*why* a trial failed (user attribute `error`, visible in optuna-dashboard).
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import warnings
from pathlib import Path

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import RDBStorage
from ray.tune.search.optuna import OptunaSearch

from emi_ray.config import Config
from emi_ray.io import join, upload_file
from emi_ray.tune.settings import SearchSettings
from emi_ray.tune.spaces import SearchSpace

logger = logging.getLogger(__name__)

# Module-level, so the pickled callback (Tune stores it in tuner.pkl) finds them again after a restore.
_PENDING_FAIL: dict[str, SafeOptunaSearch] = {}


class SafeOptunaSearch(OptunaSearch):
    """OptunaSearch that records ASHA's stops as PRUNED and tolerates a restore over a persistent study
    (see the module docstring). `max_epochs`: a trial whose last result is at an earlier epoch was stopped
    early (the search sets train.patience 0, so only the scheduler stops a trial)."""

    def __init__(self, *args, max_epochs: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs

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
        live = trial_id in self._ot_trials and trial_id not in self._completed_trials
        if live and result and not error and result.get(self.metric) is not None:
            self.on_trial_result(trial_id, result)  # the stopping epoch never reached on_trial_result
            epoch = result.get("training_iteration")
            max_epochs = getattr(self, "_max_epochs", None)  # None: a searcher pickled before PRUNED existed
            if max_epochs and epoch is not None and epoch < max_epochs:
                self._prune(trial_id, int(epoch))
                return
        super().on_trial_complete(trial_id, result=result, error=error)

    def _prune(self, trial_id: str, epoch: int) -> None:
        """Record a trial the scheduler stopped after `epoch` epochs as PRUNED (value: its last intermediate)."""
        ot_trial = self._ot_trials[trial_id]
        try:
            ot_trial.set_user_attr("stopped_at_epoch", epoch)
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        except Exception as exc:  # already finished in storage (a re-run after restore)
            logger.debug("prune %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

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


def fail_pending(trial_id: str, message: str | None) -> None:
    """The failed trial's message has come (events.TrialEvents.on_trial_error): record the FAIL."""
    searcher = _PENDING_FAIL.pop(trial_id, None)
    if searcher is not None:
        searcher.fail_trial(trial_id, message)


def flush_pending_failures() -> None:
    """FAIL trials whose on_trial_error never came (so none stays RUNNING in the study)."""
    for trial_id in list(_PENDING_FAIL):
        fail_pending(trial_id, None)


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


def study_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / 'optuna.db'}"


def load_study(run_dir: Path, settings: SearchSettings) -> optuna.Study:
    return optuna.load_study(study_name=settings.study, storage=RDBStorage(study_url(run_dir)))


def finished_in(study: optuna.Study) -> int:
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(t.state in ended for t in study.trials)


def _sampler(settings: SearchSettings) -> BaseSampler:
    if settings.sampler == "random":  # the baseline of benchmarks/search_efficiency.py
        return RandomSampler(seed=settings.seed)
    # constant_liar: while K trials run at once, TPE counts the running ones as bad results, so the
    # trials it proposes meanwhile do not all pile onto the same promising point.
    # group: a conditional space's trials sample different sets of parameters; TPE then models each set
    # that is sampled together jointly, instead of falling back to sampling them one by one. A flat space
    # is one group, so its trials are sampled exactly as without it (tests/tune/test_tune_spaces.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for multivariate, group, constant_liar
        return TPESampler(seed=settings.seed, n_startup_trials=max(4, min(10, settings.trials // 6)),
                          multivariate=True, group=True, constant_liar=settings.concurrency > 1)


def make_searcher(space: SearchSpace, settings: SearchSettings, run_dir: Path) -> SafeOptunaSearch:
    """The searcher of a new search, over the study in RUN/optuna.db."""
    # TPE's first trial is the base config (the paper's defaults, or the user's --config/--set) where
    # it lies in the space: the search starts from a known-good point and never ends below it. In a
    # conditional space the point holds the parameters whose condition the base config meets.
    start = space.start_point(Config.from_dict(settings.base)) if settings.sampler == "tpe" else {}
    return SafeOptunaSearch(space=space.searcher_space(), metric=settings.objective, mode=settings.mode,
                            sampler=_sampler(settings), study_name=settings.study,
                            storage=RDBStorage(study_url(run_dir)), max_epochs=settings.max_epochs,
                            points_to_evaluate=[start] if start and space.covers(start) else None)


def publish_study(run_dir: Path, storage: str | None, files: tuple[str, ...] = ()) -> None:
    """With --storage: copy a consistent snapshot of RUN/optuna.db (sqlite cannot live on S3), and `files`
    of RUN, to the storage location, where `emi-ray dashboard STORAGE-RUN` finds them."""
    db = run_dir / "optuna.db"
    if not storage or not db.is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "optuna.db"
        src, dst = sqlite3.connect(db), sqlite3.connect(snap)
        try:
            src.backup(dst)  # a consistent copy while the search writes to the study
        finally:
            src.close()
            dst.close()
        upload_file(snap, join(storage, "optuna.db"))
    for name in files:
        if (run_dir / name).is_file():
            upload_file(run_dir / name, join(storage, name))
