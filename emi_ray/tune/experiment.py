"""The Ray Tune experiments: the search (Optuna + ASHA, new or restored) and `fit_grid` (configs x seeds).

Every trial is the plain function trainable `trainable.train_trial` under `tune.with_resources`,
with `reuse_actors=True`: in Ray 2.60 that costs about 1 s per trial (the actor and the store it
read are kept), against about 20 s for a TorchTrainer per trial.

The search optimises `SearchSettings.objective` (`best_mean_pearson`: the best epoch's validation
mean r so far, which the trial keeps): Optuna is told it, Tune ranks by it and ASHA compares
trials by it at equal epochs (its rungs, `training_iteration`): at a rung a trial is judged by the
best model it holds by then, not by that one epoch's noisier r.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from emi_ray.errors import ConfigError
from emi_ray.io import join, remove_tree
from emi_ray.tune import study as S
from emi_ray.tune.events import (Listener, Notify, Progress, TrialEvents, asha_expected_epochs, error_message,
                                 listen, publishing)
from emi_ray.tune.settings import SearchSettings
from emi_ray.tune.spaces import SearchSpace
from emi_ray.tune.trainable import train_trial
from emi_ray.tune.trial import TrialSpec, param_space, split_config, trial_dirname

# Tune FailureConfig(max_failures) for every trial. More than one: when a node dies, Ray can place a
# retry (or a trial that was starting) on that node again before it knows the node is gone.
TRIAL_RETRIES = 3


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


@dataclass(frozen=True)
class TrialRun:
    """How Tune runs the trials of one experiment: resources, concurrency, the score, where it lives."""

    root: str | Path  # the experiment is ROOT/<name> (a directory or a URI such as s3://...)
    name: str
    max_epochs: int
    concurrency: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    metric: str = "mean_pearson"
    mode: str = "max"

    @property
    def path(self) -> str | Path:
        return join(self.root, self.name)

    def trainable(self):
        res = {"CPU": float(self.cpus), **({"GPU": float(self.gpus)} if self.gpus else {})}
        return tune.with_resources(train_trial, res)

    def run_config(self, key: str) -> tune.RunConfig:
        return tune.RunConfig(
            name=self.name, storage_path=str(self.root), verbose=0,
            # A trial whose actor or node dies is retried from its last checkpoint (a lost node costs only
            # that trial's current epoch), up to TRIAL_RETRIES times; then it is recorded as failed and the
            # search goes on. Tune cannot tell a lost node from an error in the trial, so a deterministic
            # failure (TrainingDiverged, a sampled ConfigError) is retried too: each retry fails again at once
            # or within an epoch. fit_grid refuses invalid configs before they reach Tune.
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[TrialEvents(key, self.max_epochs)],
        )

    def tune_config(self, **kw: Any) -> tune.TuneConfig:
        return tune.TuneConfig(metric=self.metric, mode=self.mode, max_concurrent_trials=self.concurrency,
                               reuse_actors=True, trial_dirname_creator=trial_dirname, **kw)


def search_run(run_dir: Path, settings: SearchSettings, name: str) -> TrialRun:
    """A search's experiment `name` (search, confirm) under RUN/ray or --storage."""
    return TrialRun(root=settings.ray_root(run_dir), name=name, max_epochs=settings.max_epochs,
                    concurrency=settings.concurrency, cpus=settings.cpus_per_trial, gpus=settings.gpus_per_trial,
                    metric=settings.objective, mode=settings.mode)


def interrupted(rg, n: int) -> bool:
    """Did the fit stop before all n trials ended (Ctrl-C, or Tune gave up)?"""
    trials = getattr(getattr(rg, "_experiment_analysis", None), "trials", None)
    if trials is None:
        return len(rg) < n
    return len(trials) < n or any(t.status not in ("TERMINATED", "ERROR") for t in trials)


def fit_search(run_dir: Path, space: SearchSpace, settings: SearchSettings, resume: bool, say: Notify,
               on_event: Listener | None):
    """Run or restore the Tune experiment `search`; returns (ResultGrid, optuna study)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = search_run(run_dir, settings, "search")
    space_in = param_space(settings.trial())
    key = f"{run_dir}:search"
    progress = Progress(say, settings.trials, "trial", settings.mode, on_event, settings.max_epochs,
                        expected_epochs=_expected_epochs(settings))
    listen(key, publishing(progress, run_dir, settings.storage, say))
    try:
        if resume and tune.Tuner.can_restore(str(run.path)):
            before = S.finished_in(S.load_study(run_dir, settings))
            say(f"resuming the search in {run_dir}: {before} of {settings.trials} trials had finished")
            progress.done = before
            tuner = tune.Tuner.restore(str(run.path), trainable=run.trainable(), resume_errored=True,
                                       param_space=space_in)
        else:
            if resume:
                say(f"{run.path}: no Tune snapshot yet; starting the search over in the same directory")
                stale = S.mark_stale(S.load_study(run_dir, settings))
                if stale:
                    say(f"marked {len(stale)} interrupted trial(s) failed in the study")
                remove_tree(run.path)
            tuner = tune.Tuner(run.trainable(), param_space=space_in, run_config=run.run_config(key),
                               tune_config=run.tune_config(search_alg=S.make_searcher(space, settings, run_dir),
                                                           scheduler=_scheduler(settings),
                                                           num_samples=settings.trials))
        with quiet_tune():
            rg = tuner.fit()
    finally:
        S.flush_pending_failures()
        listen(key, None)
    study = S.load_study(run_dir, settings)
    if not interrupted(rg, settings.trials):
        S.mark_stale(study)  # every trial has ended: anything RUNNING now was left by a killed driver
    return rg, study


def _expected_epochs(settings: SearchSettings) -> float:
    """What the console's time-left assumes a trial runs before any has ended."""
    sched = settings.scheduler
    if sched.get("kind") != "asha":
        return float(settings.max_epochs)
    return asha_expected_epochs(settings.max_epochs, sched["grace_period"], sched["reduction_factor"])


def _scheduler(settings: SearchSettings) -> ASHAScheduler | None:
    sched = settings.scheduler
    if sched.get("kind") != "asha":
        return None
    return ASHAScheduler(time_attr="training_iteration", max_t=settings.max_epochs,
                         grace_period=sched["grace_period"], reduction_factor=sched["reduction_factor"])


@dataclass
class GridPoint:
    """One trained grid point: its label, seed, score (best epoch's metric; None if it failed)."""

    label: str
    seed: int
    score: float | None
    error: str = ""


def fit_grid(trial: TrialSpec, variants: dict[str, dict[str, Any]], seeds: list[int], run: TrialRun, *,
             restore: bool = False, say: Notify | None = None, on_event: Listener | None = None,
             on_point: Callable[[GridPoint], None] | None = None) -> list[GridPoint]:
    """Train every variant (label -> config overrides) with every seed as one Tune grid; no early stopping.

    Returns one point per (variant, seed), in that order; variants with the same overrides train
    once and share their scores. `restore`: continue the experiment at run.path where Tune can
    (a confirmation interrupted half-way); else a fresh grid. `say`: one line per ended point;
    `on_point`: each point as its trial ends (a failed one with score None and its error). A
    variant whose config is invalid fails at once, on the driver, and never reaches Ray.
    """
    specs: dict[str, TrialSpec] = {}
    wanted: dict[str, list[tuple[str, int]]] = {}  # grid key -> the (label, seed) points it trains
    refused: dict[tuple[str, int], GridPoint] = {}  # invalid configs: failed here, never sent to Ray
    for label, overrides in variants.items():
        for seed in seeds:
            spec = trial.with_overrides({**overrides, "train.seed": seed})
            try:
                spec.config()  # validated on the driver: Tune would retry a deterministic failure
            except ConfigError as exc:
                refused[label, seed] = GridPoint(label, seed, None, error_message(exc))
                continue
            specs[_grid_key(spec.overrides)] = spec
            wanted.setdefault(_grid_key(spec.overrides), []).append((label, seed))
    for point in refused.values():
        if on_point is not None:
            on_point(point)
        if say is not None:
            say(f"{point.label} seed {point.seed}: FAILED: {point.error}")
    found: dict[tuple[str, int], GridPoint] = dict(refused)
    if specs:
        found.update(_fit_specs(specs, wanted, run, restore=restore, say=say, on_event=on_event, on_point=on_point))
    return [found.get((label, seed), GridPoint(label, seed, None, "no result"))
            for label in variants for seed in seeds]


def _fit_specs(specs: dict[str, TrialSpec], wanted: dict[str, list[tuple[str, int]]], run: TrialRun, *,
               restore: bool, say: Notify | None, on_event: Listener | None,
               on_point: Callable[[GridPoint], None] | None) -> dict[tuple[str, int], GridPoint]:
    """fit_grid's Tune run over the valid specs (grid key -> spec): the points it trained."""
    space_in = param_space(tune.grid_search(list(specs.values())))
    key = f"{run.path}:grid"
    if on_point is not None:
        on_event = _points(wanted, run.mode, on_event, on_point)
    if say is not None or on_event is not None:
        listen(key, Progress(say or (lambda _msg: None), len(specs), run.name, run.mode, on_event, run.max_epochs))
    try:
        if restore and tune.Tuner.can_restore(str(run.path)):
            tuner = tune.Tuner.restore(str(run.path), trainable=run.trainable(), resume_errored=True,
                                       param_space=space_in)
        else:
            tuner = tune.Tuner(run.trainable(), param_space=space_in, run_config=run.run_config(key),
                               tune_config=run.tune_config(num_samples=1))
        with quiet_tune():
            rg = tuner.fit()
    finally:
        listen(key, None)
    found: dict[tuple[str, int], GridPoint] = {}
    for r in rg:
        spec, _ = split_config(r.config or {})
        for label, seed in wanted.get(_grid_key(spec.overrides), []):
            found[label, seed] = GridPoint(label, seed, best_score(r, run.mode), error_message(r.error))
    return found


def _grid_key(overrides: dict[str, Any]) -> str:
    return json.dumps(overrides, sort_keys=True)


def _points(wanted: dict[str, list[tuple[str, int]]], mode: str, then: Listener | None,
            on_point: Callable[[GridPoint], None]) -> Listener:
    """A listener that hands each grid point to `on_point` as its trial ends (then passes the event on)."""
    keys: dict[str, str] = {}  # trial id -> grid key

    def listener(event: str, data: dict[str, Any]) -> None:
        if then is not None:
            then(event, data)
        tid = data["trial_id"]
        if event == "start":
            keys[tid] = _grid_key(split_config(data.get("config") or {})[0].overrides)
        elif event in ("complete", "error") and tid in keys:
            res = data.get("result") or {}
            r = res.get("best_mean_pearson", res.get("mean_pearson")) if mode == "max" else res.get("mean_pearson")
            score = float(r) if event == "complete" and r is not None and math.isfinite(r) else None
            error = data.get("error", "") if event == "error" else ("" if score is not None else "no score")
            for label, seed in wanted.get(keys[tid], []):
                on_point(GridPoint(label, seed, score, error))

    return listener


def best_score(result, mode: str) -> float | None:
    """A trial's best epoch: the max (mode max) or min of its reported mean_pearson; None if it failed."""
    df = result.metrics_dataframe
    if result.error is not None or df is None or "mean_pearson" not in df or not df["mean_pearson"].notna().any():
        return None
    return float(df["mean_pearson"].max() if mode == "max" else df["mean_pearson"].min())


def mean_std(xs: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and population std of the finite values (None, None when there are none)."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.pstdev(xs) if len(xs) > 1 else 0.0)
