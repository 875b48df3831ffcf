"""The Tune runs behind `run_search`: the search itself and the seed confirmation grid."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emi_ray.io import atomic_write_text, is_dir, join, remove_tree, upload_file
from emi_ray.tune.results import trial_dirname, trial_params

Notify = Callable[[str], None]
TRIAL_RETRIES = 1  # Tune FailureConfig(max_failures) for every trial: survives one lost node per trial


@contextlib.contextmanager
def quiet_tune():
    """Tune settings for the duration of a fit (read from the environment by Tune's driver).

    Snapshots at most every 5 s (--resume loses less); no console tables (the caller
    reports progress through `notify`); no warning about the snapshots that
    `CheckpointConfig(num_to_keep=1)` forces (they are small here).
    """
    env = {"TUNE_GLOBAL_CHECKPOINT_S": "5", "RAY_AIR_NEW_OUTPUT": "0",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    # Failed trials are reported through `notify` (one line each, traceback in the trial's error.txt),
    # not as Tune's tracebacks on the console.
    # Also quiet: "operation took 0.6 s, which may be a performance bottleneck" (sqlite writes on a busy machine).
    loggers = [logging.getLogger(n) for n in ("ray.tune.execution.tune_controller", "ray.tune.tune",
                                              "ray.tune.utils.util")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _trainable(settings: dict[str, Any]):
    from ray import tune

    from emi_ray.tune.trainable import train_trial

    res = {"CPU": float(settings["cpus_per_trial"])}
    if settings["gpus_per_trial"]:
        res["GPU"] = float(settings["gpus_per_trial"])
    return tune.with_resources(train_trial, res)


def _short_params(params: dict[str, Any]) -> str:
    out = []
    for k, v in params.items():
        name = k.split(".", 1)[1]
        out.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(out)


class _Progress:
    """Turns trial events into one-line progress messages (and passes them on)."""

    def __init__(self, say: Notify, total: int, max_epochs: int, what: str, mode: str,
                 on_event: Callable[[str, dict[str, Any]], None] | None):
        self.say, self.total, self.max_epochs, self.what, self.on_event = say, total, max_epochs, what, on_event
        self.done, self.best = 0, None
        self.sign = 1 if mode == "max" else -1
        self.params: dict[str, str] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.on_event:
            self.on_event(event, data)
        tid = data["trial_id"]
        if event == "start":
            self.params[tid] = _short_params(trial_params(data.get("config") or {}))
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


def ray_root(run_dir: Path, settings: dict[str, Any]) -> str | Path:
    """Where the search's Tune experiments live: RUN/ray, or the --storage location (e.g. s3://...)."""
    return settings.get("storage") or run_dir / "ray"


def publish_study(run_dir: Path, settings: dict[str, Any], files: tuple[str, ...] = ()) -> None:
    """With --storage: copy a consistent snapshot of RUN/optuna.db (sqlite cannot live on S3), and `files`
    of RUN, to the storage location, where `emi-ray dashboard STORAGE-RUN` finds them."""
    import sqlite3
    import tempfile

    dest = settings.get("storage")
    db = run_dir / "optuna.db"
    if not dest or not db.is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "optuna.db"
        src, dst = sqlite3.connect(db), sqlite3.connect(snap)
        try:
            src.backup(dst)  # a consistent copy while the search writes to the study
        finally:
            src.close()
            dst.close()
        upload_file(snap, join(dest, "optuna.db"))
    for name in files:
        if (run_dir / name).is_file():
            upload_file(run_dir / name, join(dest, name))


def _publishing(progress, run_dir: Path, settings: dict[str, Any], say: Notify):
    """The trial-event listener: `progress`, and with --storage the study copied after every ended trial."""
    if not settings.get("storage"):
        return progress

    def listener(event: str, data: dict[str, Any]) -> None:
        progress(event, data)
        if event in ("complete", "error"):
            try:
                publish_study(run_dir, settings)
            except OSError as e:  # the next ended trial (or the end of the search) tries again
                say(f"could not copy optuna.db to {settings['storage']}: {e}")

    return listener


def _run_config(run_dir: Path, name: str, key: str, max_epochs: int, storage: str | None = None):
    from ray import tune

    from emi_ray.tune.searcher import TrialEvents

    return tune.RunConfig(
        name=name, storage_path=str(storage or run_dir / "ray"), verbose=0,
        # A trial whose actor or node dies is retried once from its last checkpoint (a lost node costs only
        # that trial's current epoch); a trial that fails again is recorded as failed and the search goes on.
        # Tune cannot tell a lost node from an error in the trial, so a deterministic failure (ConfigError,
        # TrainingDiverged) is also retried once: it fails again at once or within an epoch of its checkpoint.
        failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[TrialEvents(key, max_epochs)],
    )


def trial_inputs(settings: dict[str, Any]) -> dict[str, Any]:
    """What every trial gets besides its sampled parameters (trainable.RESERVED keys)."""
    extra = {"stage1_root": settings["stage1_root"]} if settings.get("stage1_root") else {}
    return {"base": settings["base"], "features": settings["features"], **extra}


def fit_search(run_dir: Path, space, settings: dict[str, Any], resume: bool, say: Notify,
               on_event: Callable[[str, dict[str, Any]], None] | None):
    """Run or restore the Tune experiment ray/search; returns (ResultGrid, optuna study)."""
    import optuna
    from optuna.storages import RDBStorage
    from ray import tune

    from emi_ray.tune.searcher import flush_pending_failures, listen, mark_stale

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{run_dir / 'optuna.db'}"
    exp = join(ray_root(run_dir, settings), "search")
    param_space = trial_inputs(settings)
    key = f"{run_dir}:search"
    progress = _Progress(say, settings["trials"], settings["max_epochs"], "trial", settings["mode"], on_event)
    listen(key, _publishing(progress, run_dir, settings, say))
    try:
        if resume and tune.Tuner.can_restore(str(exp)):
            before = _finished_in(optuna.load_study(study_name=settings["study"], storage=RDBStorage(url)))
            say(f"resuming the search in {run_dir}: {before} of {settings['trials']} trials had finished")
            progress.done = before
            tuner = tune.Tuner.restore(str(exp), trainable=_trainable(settings), resume_errored=True,
                                       param_space=param_space)
        else:
            if resume:
                say(f"{exp}: no Tune snapshot yet; starting the search over in the same directory")
                stale = mark_stale(optuna.load_study(study_name=settings["study"], storage=RDBStorage(url)))
                if stale:
                    say(f"marked {len(stale)} interrupted trial(s) failed in the study")
                remove_tree(exp)
            tuner = _new_tuner(space, settings, param_space, run_dir, key, url)
        with quiet_tune():
            rg = tuner.fit()
    finally:
        flush_pending_failures()
        listen(key, None)
    study = optuna.load_study(study_name=settings["study"], storage=RDBStorage(url))
    if not interrupted(rg, settings["trials"]):
        mark_stale(study)  # every trial has ended: anything RUNNING now was left by a killed driver
    return rg, study


def interrupted(rg, n: int) -> bool:
    """Did the fit stop before all n trials ended (Ctrl-C, or Tune gave up)?"""
    trials = getattr(getattr(rg, "_experiment_analysis", None), "trials", None)
    if trials is None:
        return len(rg) < n
    return len(trials) < n or any(t.status not in ("TERMINATED", "ERROR") for t in trials)


def _finished_in(study) -> int:
    import optuna

    return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for t in study.trials)


def _new_tuner(space, settings, param_space, run_dir: Path, key: str, url: str):
    import warnings

    from optuna.samplers import TPESampler
    from optuna.storages import RDBStorage
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from emi_ray.config import Config
    from emi_ray.tune.searcher import SafeOptunaSearch

    n = settings["trials"]
    if settings.get("sampler", "tpe") == "random":  # the baseline of benchmarks/search_efficiency.py
        from optuna.samplers import RandomSampler

        sampler = RandomSampler(seed=settings["seed"])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for multivariate, constant_liar
            sampler = TPESampler(seed=settings["seed"], n_startup_trials=max(4, min(10, n // 6)),
                                 multivariate=True, constant_liar=settings["concurrency"] > 1)
    # TPE's first trial is the base config (the paper's defaults, or the user's --config/--set) where
    # it lies in the space: the search starts from a known-good point and never ends below it.
    start = space.start_point(Config.from_dict(settings["base"])) if settings.get("sampler", "tpe") == "tpe" else {}
    searcher = SafeOptunaSearch(space=space.optuna_space(), metric=settings["metric"], mode=settings["mode"],
                                sampler=sampler, study_name=settings["study"], storage=RDBStorage(url),
                                points_to_evaluate=[start] if len(start) == len(space.params) else None)
    sched = settings["scheduler"]
    scheduler = None
    if sched.get("kind") == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings["max_epochs"],
                                  grace_period=sched["grace_period"], reduction_factor=sched["reduction_factor"])
    return tune.Tuner(
        _trainable(settings), param_space=param_space,
        tune_config=tune.TuneConfig(metric=settings["metric"], mode=settings["mode"], search_alg=searcher,
                                    scheduler=scheduler, num_samples=n,
                                    max_concurrent_trials=settings["concurrency"], reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=_run_config(run_dir, "search", key, settings["max_epochs"], settings.get("storage")),
    )


def fit_confirm(run_dir: Path, top: list[dict[str, Any]], settings: dict[str, Any], say: Notify,
                on_event: Callable[[str, dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """Re-train the top configs with fresh seeds (one grid Tune run, no early stopping)."""
    from ray import tune

    from emi_ray.tune.search import mean_std, seed_list
    from emi_ray.tune.searcher import listen

    seeds = seed_list(settings["seed"], settings["confirm_seeds"])
    grid = [{**row["params"], "train.seed": s} for row in top for s in seeds]
    exp = join(ray_root(run_dir, settings), "confirm")
    param_space = {**trial_inputs(settings), "overrides": tune.grid_search(grid)}
    key = f"{run_dir}:confirm"
    listen(key, _Progress(say, len(grid), settings["max_epochs"], "confirm", settings["mode"], on_event))
    say(f"confirming the top {len(top)} configs with seeds {seeds} ({len(grid)} runs)")
    marker = run_dir / "ray" / "confirm.json"
    plan = json.dumps({"seeds": seeds, "trials": [row["trial_id"] for row in top]})
    if is_dir(exp) and (not marker.is_file() or marker.read_text() != plan):
        remove_tree(exp)  # a different confirmation than the one stored: start it over
    atomic_write_text(marker, plan)
    try:
        if tune.Tuner.can_restore(str(exp)):
            tuner = tune.Tuner.restore(str(exp), trainable=_trainable(settings), resume_errored=True,
                                       param_space=param_space)
        else:
            tuner = tune.Tuner(
                _trainable(settings), param_space=param_space,
                tune_config=tune.TuneConfig(metric=settings["metric"], mode=settings["mode"], num_samples=1,
                                            max_concurrent_trials=settings["concurrency"], reuse_actors=True,
                                            trial_dirname_creator=trial_dirname),
                run_config=_run_config(run_dir, "confirm", key, settings["max_epochs"], settings.get("storage")),
            )
        with quiet_tune():
            rg = tuner.fit()
    finally:
        listen(key, None)
    scores: dict[tuple[str, int], float | None] = {}
    for r in rg:
        ov = (r.config or {}).get("overrides", {})
        df = r.metrics_dataframe
        val = None
        if r.error is None and df is not None and "mean_pearson" in df and df["mean_pearson"].notna().any():
            val = float(df["mean_pearson"].max() if settings["mode"] == "max" else df["mean_pearson"].min())
        for row in top:
            if {k: ov.get(k) for k in row["params"]} == row["params"]:
                scores[(row["trial_id"], ov.get("train.seed"))] = val
    out = []
    for row in top:
        vals = [scores.get((row["trial_id"], s)) for s in seeds]
        m, sd = mean_std(vals)
        out.append({"trial_id": row["trial_id"], "number": row["number"], "search_r": row["mean_pearson"],
                    "params": row["params"], "seeds": seeds, "scores": vals, "mean": m, "std": sd})
    return out
