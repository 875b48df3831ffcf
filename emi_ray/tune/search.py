"""`run_search`: Ray Tune + Optuna (TPE) + ASHA over a named search space.

Pattern B of ray-2.60-notes.md: every trial is the plain function trainable
`emi_ray.tune.trainable.train_trial` (the same `fit` as `emi-ray train`) under
`tune.with_resources`, with `reuse_actors=True`. The Optuna study lives in
`RUN/optuna.db` (sqlite), so `optuna-dashboard` shows it live and afterwards.

Search run directory (RUN, default EMI_RAY_HOME/runs/tune-<space>-<stamp>):
  search.json    settings (space, trials, epochs, seed, features, base config): --resume reads it
  space.yaml     a self-contained copy of the search space as used
  optuna.db      the Optuna study "search" (optuna-dashboard sqlite:///RUN/optuna.db)
  ray/search/    Ray Tune experiment (trial checkpoints, results); ray/confirm/ for --confirm-seeds
                 (with --storage URI: URI/<run name>/search and .../confirm instead, e.g. on S3, and copies
                 of optuna.db -- after every ended trial -- and of the result files beside them)
  trials.csv     one row per trial: number, status, best mean r, its epoch, epochs run, params, error
  best.yaml      the best trial's full resolved config (load_config reads it)
  importance.png history.png   parameter importance (fANOVA) and optimisation history
  summary.json   best trial, top trials, counts, confirmation by seed, timings
EMI_RAY_HOME/searches/<space>.latest holds the path of the latest search of each space.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emi_ray.config import Config, apply_overrides, set_value
from emi_ray.data.normalize import ensure_store_stats
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, home, join, location, resolved

STUDY = "search"
SEARCH_NAME = "search"
CONFIRM_NAME = "confirm"
TOP_K = 3

Notify = Callable[[str], None]


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


@dataclass
class SearchResult:
    run_dir: Path
    space: str
    trials: list[dict[str, Any]]  # every trial (results.result_rows), in Optuna order
    top: list[dict[str, Any]]  # scored trials, best first
    best: dict[str, Any] | None  # the chosen trial (with confirmation stats if any)
    best_config: Config | None  # its resolved config (as searched: train.epochs = max_epochs)
    counts: dict[str, int]
    files: dict[str, Path]
    storage: Path
    dashboard_command: str
    ray_dashboard: str | None
    confirm: list[dict[str, Any]] | None = None
    importances: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    resumed: bool = False
    interrupted: bool = False  # stopped before every trial ended: --resume continues it
    ray_storage: str | None = None  # --storage: where the Tune experiments and the study's copy went


def pointer_path(space: str) -> Path:
    return home() / "searches" / f"{space}.latest"


def dashboard_command(storage: Path) -> str:
    return f"optuna-dashboard sqlite:///{storage} --host 127.0.0.1 --port 8080"


def _settings_for_new(space, features: str | Path, trials, concurrency, max_epochs, cpus_per_trial, gpus_per_trial,
                      seed, confirm_seeds, top_k, base: Config | None, overrides: list[str] | None,
                      sampler: str = "tpe") -> dict:
    base = Config.from_dict(base.to_dict()) if base is not None else Config()
    for key, value in space.fixed.items():
        set_value(base, key, value)
    apply_overrides(base, overrides)
    full_epochs, full_patience = base.train.epochs, base.train.patience
    max_epochs = max_epochs or space.max_epochs
    if sampler not in ("tpe", "random"):
        raise EmiError(f"sampler {sampler!r}: use tpe or random")
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise EmiError(f"--cpus-per-trial {cpus_per_trial} / --gpus-per-trial {gpus_per_trial}: "
                       f"need cpus > 0 and gpus >= 0")
    for name, v in (("--trials", trials), ("--concurrency", concurrency), ("--max-epochs", max_epochs)):
        if v is not None and v < 1:
            raise EmiError(f"{name} {v}: must be >= 1")
    base.train.epochs = max_epochs  # ASHA stops early; the trial budget is max_epochs
    base.train.patience = 0
    base.train.seed = seed
    base.train.torch_threads = max(1, int(cpus_per_trial))
    base.data.features = str(features)
    sched = dict(space.scheduler)
    if sched.get("kind") == "asha":
        sched["grace_period"] = min(sched["grace_period"], max_epochs)
    return {
        "space": space.name, "space_source": str(space.path), "features": str(features),
        "trials": trials or space.trials, "concurrency": concurrency or space.concurrency,
        "max_epochs": max_epochs, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
        "seed": seed, "sampler": sampler, "confirm_seeds": confirm_seeds, "top_k": top_k, "metric": space.metric,
        "mode": space.mode, "scheduler": sched, "full_epochs": full_epochs, "full_patience": full_patience,
        "base": base.to_dict(), "study": STUDY, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def find_search(space: str | None, run_dir: str | Path | None) -> Path:
    """A search run dir: `run_dir` itself, or the latest search of `space` (its pointer file)."""
    if run_dir is not None:
        p = Path(run_dir).expanduser()
        if not (p / "search.json").is_file():
            raise EmiError(f"{p}: not a search run directory (no search.json)")
        return p.resolve()
    name = Path(space).stem if space else "fusion"
    ptr = pointer_path(name)
    if not ptr.is_file():
        raise EmiError(f"no search of space {name!r} yet ({ptr} missing); run `emi-ray tune --space {name}` "
                       f"or pass --out RUN")
    p = Path(ptr.read_text().strip())
    if not (p / "search.json").is_file():
        raise EmiError(f"{ptr} points to {p}, which is not a search run directory (moved or deleted?)")
    return p


def run_search(space: str | Path = "fusion", features: str | Path | None = None, *, trials: int | None = None,
               concurrency: int | None = None, max_epochs: int | None = None, cpus_per_trial: float = 1.0,
               gpus_per_trial: float = 0.0, seed: int = 0, out: str | Path | None = None, resume: bool = False,
               confirm_seeds: int = 0, top_k: int = TOP_K, base: Config | None = None,
               overrides: list[str] | None = None, sampler: str = "tpe", address: str | None = None,
               storage: str | Path | None = None, notify: Notify | None = None,
               on_start: Callable[[SearchStart], None] | None = None,
               on_event: Callable[[str, dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or with `resume`, continue) a search; write the run directory; return its results.

    Never prints: progress goes to `notify(str)`, trial events to `on_event(kind, data)`.
    `sampler="random"` swaps TPE for Optuna's RandomSampler (the benchmark's baseline).
    `storage` (a directory or a URI such as s3://bucket/runs): Tune's experiments go to STORAGE/<run name>
    instead of RUN/ray, with copies of optuna.db and the result files (recorded in search.json: --resume
    continues from there). RUN keeps the settings, the study and the results.
    """
    from emi_ray.data.default import resolve_features
    from emi_ray.data.store import FeatureStore
    from emi_ray.tune.spaces import check_runnable, load_space, space_to_yaml

    say = notify or (lambda _msg: None)
    t0 = time.perf_counter()
    if resume:
        run_dir = find_search(space if out is None else None, out)
        settings = json.loads((run_dir / "search.json").read_text())
        sp = load_space(run_dir / "space.yaml")
        sp.name = settings["space"]
        if confirm_seeds and confirm_seeds != settings.get("confirm_seeds"):
            settings["confirm_seeds"] = confirm_seeds  # adding a confirmation to a finished search
            atomic_write_text(run_dir / "search.json", json.dumps(settings, indent=2))
        feats = location(settings["features"])
    else:
        sp = load_space(space)
        # stage-I trials align encoder features: their default store is extracted from synthetic media
        feats = resolved(resolve_features(features, say, media=bool(sp.stage1_keys())))
        FeatureStore(feats)  # a store? (reads the manifest only)
        check_runnable(sp, feats)
        if not sp.stage1_keys():  # trials read the store's normalisation statistics instead of recomputing
            ensure_store_stats(feats)
        settings = _settings_for_new(sp, feats, trials, concurrency, max_epochs, cpus_per_trial, gpus_per_trial,
                                     seed, confirm_seeds, top_k, base, overrides, sampler)
        Config.from_dict(settings["base"])  # validates the base config before starting Ray
        if out is not None:
            run_dir = Path(out).expanduser().resolve()
        else:
            from emi_ray.train.trainer import new_run_dir

            run_dir = new_run_dir(f"tune-{sp.name}").resolve()
        if (run_dir / "search.json").exists():
            raise EmiError(f"{run_dir}: a search already lives here; pass --resume to continue it "
                           f"or choose a new --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        if sp.stage1_keys():  # stage-I runs of the trials, one per distinct stage1 config
            settings["stage1_root"] = str(run_dir / "stage1")
        if storage is not None:
            settings["storage"] = str(join(resolved(storage), run_dir.name))
        atomic_write_text(run_dir / "space.yaml", space_to_yaml(sp))
        atomic_write_text(run_dir / "search.json", json.dumps(settings, indent=2))
    atomic_write_text(pointer_path(settings["space"]), f"{run_dir}\n")

    ray_url = _ray_up(address)
    storage = run_dir / "optuna.db"
    start = SearchStart(run_dir=run_dir, space=settings["space"], features=feats, storage=storage,
                        dashboard_command=dashboard_command(storage), ray_dashboard=ray_url,
                        trials=settings["trials"], concurrency=settings["concurrency"],
                        max_epochs=settings["max_epochs"], resumed=resume, ray_storage=settings.get("storage"))
    if on_start:
        on_start(start)

    from emi_ray.tune import results as R
    from emi_ray.tune.runner import fit_search

    rg, study = fit_search(run_dir, sp, settings, resume, say, on_event)
    numbers = {t.user_attrs.get("tune_trial_id"): t.number for t in study.trials}
    rows = R.result_rows(rg, settings["max_epochs"], numbers)
    top = R.ranked(rows)
    if settings["mode"] == "min":
        top = top[::-1]
    from emi_ray.tune.runner import interrupted

    stopped = interrupted(rg, settings["trials"])
    if stopped:
        say(f"the search stopped before all {settings['trials']} trials ended; continue it with "
            f"`emi-ray tune --resume --out {run_dir}`")
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("complete", "stopped early", "failed", "unfinished", "no result")}
    counts["total"] = len(rows)
    files = {"trials_csv": run_dir / "trials.csv", "history_png": run_dir / "history.png",
             "importance_png": run_dir / "importance.png", "summary": run_dir / "summary.json"}
    R.write_trials_csv(rows, files["trials_csv"])
    from emi_ray.plots import optimisation_history, param_importance

    optimisation_history(rows, files["history_png"], title=f"search {settings['space']}: {len(rows)} trials")
    imp = R.importances(rows, sp, seed=settings["seed"])
    param_importance(imp, files["importance_png"], title=f"search {settings['space']}: parameter importance")

    best, best_cfg, confirm = None, None, None
    if top:
        best = dict(top[0])
        if settings.get("confirm_seeds", 0) > 0 and not stopped:
            from emi_ray.tune.runner import fit_confirm

            confirm = fit_confirm(run_dir, top[: settings["top_k"]], settings, say, on_event)
            sign = 1 if settings["mode"] == "max" else -1
            chosen = max(confirm, key=lambda c: sign * c["mean"] if c["mean"] is not None else -math.inf)
            best = dict(next(r for r in top if r["trial_id"] == chosen["trial_id"]))
            best["confirm"] = chosen
        best_cfg = R.resolved_config(best, settings["features"])
        files["best_yaml"] = run_dir / "best.yaml"
        R.write_best_yaml(best_cfg, files["best_yaml"], _best_header(run_dir, settings, best))
    else:
        say("no trial produced a score: no best.yaml (see trials.csv for the errors)")
    elapsed = time.perf_counter() - t0
    summary = {
        "space": settings["space"], "run_dir": str(run_dir), "features": settings["features"],
        "counts": counts, "elapsed_s": elapsed, "resumed": resume, "interrupted": stopped,
        "best": _public(best) if best else None,
        "top": [_public(r) for r in top[:10]], "confirm": confirm, "importances": imp,
        "full_budget": {"train.epochs": settings["full_epochs"], "train.patience": settings["full_patience"]},
        "storage": str(storage), "dashboard_command": dashboard_command(storage),
        "ray_storage": settings.get("storage"),
    }
    atomic_write_text(files["summary"], json.dumps(summary, indent=2, default=str))
    from emi_ray.tune.runner import publish_study

    publish_study(run_dir, settings, ("search.json", "space.yaml", "trials.csv", "summary.json", "best.yaml"))
    return SearchResult(run_dir=run_dir, space=settings["space"], trials=rows, top=top, best=best,
                        best_config=best_cfg, counts=counts, files=files, storage=storage,
                        dashboard_command=dashboard_command(storage), ray_dashboard=ray_url, confirm=confirm,
                        importances=imp, elapsed_s=elapsed, resumed=resume, interrupted=stopped,
                        ray_storage=settings.get("storage"))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "config"}


def _best_header(run_dir: Path, settings: dict, best: dict) -> list[str]:
    lines = [
        f"emi-ray tune: best config of search space {settings['space']!r} ({run_dir})",
        f"trial {best['number']} ({best['trial_id']}): validation mean r {best['mean_pearson']:.4f} at epoch "
        f"{best['best_epoch'] + 1} of {best['epochs']} run (max {settings['max_epochs']})",
    ]
    c = best.get("confirm")
    if c:
        lines.append(f"confirmed: top-{settings['top_k']} re-trained with seeds {c['seeds']}; chosen by mean "
                     f"r {c['mean']:.4f} +- {c['std']:.4f}")
    lines.append(f"full budget: `emi-ray train --best --from {run_dir}` sets train.epochs="
                 f"{settings['full_epochs']}, train.patience={settings['full_patience']}")
    return lines


def _ray_up(address: str | None) -> str | None:
    import ray

    from emi_ray.ray_env import init_ray

    if not ray.is_initialized():
        return init_ray(address)
    try:
        from ray._private.worker import get_dashboard_url

        url = get_dashboard_url()
        return f"http://{url}" if url and not url.startswith("http") else url
    except Exception:  # noqa: BLE001 - only for display
        return None


def seed_list(seed: int, n: int) -> list[int]:
    """Confirmation seeds: fresh ones (the search trial's own seed is selection-biased)."""
    return [seed + 1 + i for i in range(n)]


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.pstdev(xs) if len(xs) > 1 else 0.0)

