"""`run_search`: Ray Tune + Optuna (TPE) + ASHA over a named search space, in three steps.

prepare (a new search's run directory, or the stored one of a resumed search), fit (the Tune
experiment, experiment.py), summarise (rows, plots, confirmation, best.yaml, summary.json).
The Optuna study lives in `RUN/optuna.db` (sqlite), so `optuna-dashboard` shows it live and after.

Search run directory (RUN, default EMI_RAY_HOME/runs/tune-<space>-<stamp>):
  search.json    the SearchSettings (space, trials, epochs, seed, features, base config): --resume reads it
  space.yaml     a self-contained copy of the search space as used
  optuna.db      the Optuna study "search" (optuna-dashboard sqlite:///RUN/optuna.db)
  ray/search/    Ray Tune experiment (trial checkpoints, results); ray/confirm/ for --confirm-seeds
                 (with --storage URI: URI/<run name>-<path digest>/search and .../confirm instead, e.g. on S3, and copies
                 of optuna.db -- after every ended trial -- and of the result files beside them)
  stage1/        a search over stage1 keys: the trials' stage-I runs, one per distinct stage1 config
  ray.log        Ray's own log lines and what the trials print (the console shows neither; --verbose does)
  trials.csv     one row per trial: number, status, best mean r, its epoch, epochs run, params, error
  best.yaml      the best trial's full resolved config (load_config reads it): the best trial that ran
                 all epochs, the study's best trial (ASHA-stopped trials are PRUNED in the study)
  importance.png history.png   parameter importance (fANOVA) and optimisation history
  summary.json   best trial, top trials, counts, confirmation by seed, timings
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from emi_ray.data.normalize import ensure_store_stats
from emi_ray.data.store import FeatureStore
from emi_ray.engine.provenance import write_provenance
from emi_ray.engine.rundir import new_run_dir, run_lock, storage_name
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, join, location, resolved
from emi_ray.ray_env import RAY_LOG, init_ray, log_ray_to
from emi_ray.tune import results as R
from emi_ray.tune.results import SearchResult
from emi_ray.tune.confirm import chosen, confirm_top
from emi_ray.tune.events import Listener, Notify
from emi_ray.tune.experiment import fit_search, interrupted
from emi_ray.tune.settings import (SETTINGS_FILE, SearchRequest, SearchSettings, dashboard_command, find_search,
                                   pointer_path)
from emi_ray.tune.spaces import SearchSpace, check_runnable, load_space, space_to_yaml
from emi_ray.tune.study import publish_study

RESULT_FILES = (SETTINGS_FILE, "space.yaml", "trials.csv", "summary.json", "best.yaml")  # copied to --storage


@dataclass
class SearchStart:
    """What a caller shows when the search starts (the CLI prints it)."""

    run_dir: Path
    space: str
    features: str | Path
    storage: Path
    dashboard_command: str
    ray_dashboard: str | None
    trials: int
    concurrency: int
    max_epochs: int
    resumed: bool
    ray_storage: str | None = None  # --storage: where the Tune experiments go (STORAGE/<run name>)


def run_search(request: SearchRequest, *, notify: Notify | None = None,
               on_start: Callable[[SearchStart], None] | None = None,
               on_event: Listener | None = None) -> SearchResult:
    """Run (or with `request.resume`, continue) a search; write the run directory; return its results.

    Never prints: progress goes to `notify(str)`, trial events to `on_event(kind, data)`.
    """
    say = notify or (lambda _msg: None)
    t0 = time.perf_counter()
    run_dir, settings, space = _resumed(request) if request.resume else _new(request)
    with run_lock(run_dir):  # a second `tune --resume` of this search gets one line naming this one
        res = _run(request, run_dir, settings, space, say, on_start, on_event)
    res.elapsed_s = time.perf_counter() - t0
    R.write_summary(res, settings)
    publish_study(run_dir, settings.storage, RESULT_FILES)
    return res


def _run(request: SearchRequest, run_dir: Path, settings: SearchSettings, space: SearchSpace, say: Notify,
         on_start: Callable[[SearchStart], None] | None, on_event: Listener | None) -> SearchResult:
    """Start Ray, fit the experiment, summarise it (under the search's lock)."""
    atomic_write_text(pointer_path(settings.space), f"{run_dir}\n")
    log_ray_to(run_dir / RAY_LOG)  # Ray's own log lines and the trials' output: RUN/ray.log (not with --verbose)
    ray_url = _ray_up(request.address)
    storage = run_dir / "optuna.db"
    if on_start:
        on_start(SearchStart(run_dir=run_dir, space=settings.space, features=location(settings.features),
                             storage=storage, dashboard_command=dashboard_command(storage), ray_dashboard=ray_url,
                             trials=settings.trials, concurrency=settings.concurrency,
                             max_epochs=settings.max_epochs, resumed=request.resume, ray_storage=settings.storage))
    rg, study = fit_search(run_dir, space, settings, request.resume, say, on_event)
    res = _summarise(run_dir, space, settings, rg, study, say, on_event)
    res.ray_dashboard, res.resumed = ray_url, request.resume
    return res


def _new(request: SearchRequest) -> tuple[Path, SearchSettings, SearchSpace]:
    """Prepare a new search: check the space against the store, write search.json and space.yaml."""
    if request.features is None:
        raise EmiError("a new search needs a feature store (the CLI resolves the built-in default one)")
    space = load_space(request.space)
    feats = resolved(request.features)
    FeatureStore(feats)  # a store? (reads the manifest only)
    check_runnable(space, feats)
    if not space.stage1_keys():  # trials read the store's normalisation statistics instead of recomputing
        ensure_store_stats(feats)
    settings = SearchSettings.new(request, space, feats)
    run_dir = Path(request.out).expanduser().resolve() if request.out else new_run_dir(f"tune-{space.name}").resolve()
    if (run_dir / SETTINGS_FILE).exists():
        raise EmiError(f"{run_dir}: a search already lives here; pass --resume to continue it or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if space.stage1_keys():  # stage-I runs of the trials, one per distinct stage1 config
        settings.stage1_root = str(run_dir / "stage1")
    if request.storage is not None:
        settings.storage = str(join(resolved(request.storage), storage_name(run_dir)))  # unique per run
    atomic_write_text(run_dir / "space.yaml", space_to_yaml(space))
    settings.save(run_dir)
    write_provenance(run_dir, "search", feats, space=space.name)
    return run_dir, settings, space


def _resumed(request: SearchRequest) -> tuple[Path, SearchSettings, SearchSpace]:
    """Prepare a resumed search: its stored settings and space copy (adding --confirm-seeds if asked)."""
    run_dir = find_search(str(request.space) if request.out is None else None, request.out)
    settings = SearchSettings.load(run_dir)
    space = load_space(run_dir / "space.yaml")
    space.name = settings.space
    if request.confirm_seeds and request.confirm_seeds != settings.confirm_seeds:
        settings.confirm_seeds = request.confirm_seeds  # adding a confirmation to a finished search
        settings.save(run_dir)
    return run_dir, settings, space


def _summarise(run_dir: Path, space: SearchSpace, settings: SearchSettings, rg, study, say: Notify,
               on_event: Listener | None) -> SearchResult:
    """Rows, counts, trials.csv, plots; the confirmation (if asked) and best.yaml."""
    numbers = {t.user_attrs.get("tune_trial_id"): t.number for t in study.trials}
    rows = R.result_rows(rg, settings.max_epochs, numbers)
    top = R.ranked(rows, settings.mode)
    stopped = interrupted(rg, settings.trials)
    if stopped:
        say(f"the search stopped before all {settings.trials} trials ended; continue it with "
            f"`emi-ray tune --resume --out {run_dir}`")
    files, imp = R.write_trial_files(run_dir, rows, space, settings)
    best, best_cfg, confirm = None, None, None
    if top:
        best = dict(top[0])
        if settings.confirm_seeds > 0 and not stopped:
            confirm = confirm_top(run_dir, top[: settings.top_k], settings, say, on_event)
            pick = chosen(confirm, settings.mode)
            best = {**next(r for r in top if r["trial_id"] == pick["trial_id"]), "confirm": pick}
        best_cfg = R.resolved_config(best, settings.features)
        files["best_yaml"] = run_dir / "best.yaml"
        R.write_best_yaml(best_cfg, files["best_yaml"], R.best_header(run_dir, settings, best))
    else:
        say("no trial produced a score: no best.yaml (see trials.csv for the errors)")
    storage = run_dir / "optuna.db"
    return SearchResult(run_dir=run_dir, space=settings.space, trials=rows, top=top, best=best,
                        best_config=best_cfg, counts=R.counts(rows), files=files, storage=storage,
                        dashboard_command=dashboard_command(storage), ray_dashboard=None, confirm=confirm,
                        importances=imp, interrupted=stopped, ray_storage=settings.storage)


def _ray_up(address: str | None) -> str | None:
    """Start or join Ray; the dashboard's URL, for display."""
    if not ray.is_initialized():
        return init_ray(address)
    try:
        from ray._private.worker import get_dashboard_url  # private: only for display, so guarded

        url = get_dashboard_url()
        return f"http://{url}" if url and not url.startswith("http") else url
    except Exception:  # noqa: BLE001 - only for display
        return None
