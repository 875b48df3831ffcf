"""What a search is asked for (`SearchRequest`) and what it runs with (`SearchSettings`, RUN/search.json).

A request holds the caller's choices, most of them optional (the space's defaults fill them);
the settings are the request resolved against the space: every trial's base config, the budget,
the scheduler. `--resume` reads the settings back from search.json, whatever the request says.
EMI_RAY_HOME/searches/<space>.latest holds the path of the latest search of each space.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emi_ray.config import Config, apply_overrides, set_value
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, home
from emi_ray.tune.spaces import SearchSpace
from emi_ray.tune.trial import TrialSpec

STUDY = "search"  # the Optuna study's name in RUN/optuna.db
TOP_K = 3
SETTINGS_FILE = "search.json"


@dataclass
class SearchRequest:
    """The inputs of `run_search` (the options of `emi-ray tune`); None: the space's default.

    A new search needs `features`: a store path or URI, already resolved (the CLI resolves the
    built-in default store). With `resume`, `out` (or the latest search of `space`) names the
    search and its stored settings apply; only `confirm_seeds` may be added to them.
    """

    space: str | Path = "fusion"
    features: str | Path | None = None
    trials: int | None = None
    concurrency: int | None = None
    max_epochs: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0  # seeds the sampler and every trial's training
    confirm_seeds: int = 0  # > 0: re-train the top_k trials with this many fresh seeds, choose by the mean
    top_k: int = TOP_K
    base: Config | None = None  # every trial's base config (then the space's `fixed`, then `overrides`)
    overrides: list[str] = field(default_factory=list)  # key=value, as --set
    sampler: str = "tpe"  # or "random" (Optuna's RandomSampler: the benchmark's baseline)
    storage: str | Path | None = None  # Tune's experiments go to STORAGE/<run name> (e.g. s3://bucket/runs)
    out: str | Path | None = None  # the run directory (default EMI_RAY_HOME/runs/tune-<space>-<stamp>)
    resume: bool = False
    address: str | None = None  # the Ray cluster to join


@dataclass
class SearchSettings:
    """A search's resolved settings, as RUN/search.json stores them."""

    space: str  # the space's name
    space_source: str  # the file it was read from (RUN/space.yaml holds the copy used)
    features: str  # the store every trial reads (resolved path or URI)
    trials: int
    concurrency: int
    max_epochs: int  # epochs per trial (ASHA's max_t); base.train.epochs is set to it
    cpus_per_trial: float
    gpus_per_trial: float
    seed: int
    top_k: int
    metric: str
    mode: str
    scheduler: dict[str, Any]
    full_epochs: int  # train.epochs and train.patience before the search set them: `train --best` restores
    full_patience: int
    base: dict[str, Any]  # every trial's base config (Config.to_dict)
    sampler: str = "tpe"
    confirm_seeds: int = 0
    study: str = STUDY
    created: str = ""
    stage1_root: str | None = None  # a search over stage1 keys: RUN/stage1, the trials' stage-I runs
    storage: str | None = None  # --storage: where the Tune experiments and copies of the results go

    @classmethod
    def new(cls, request: SearchRequest, space: SearchSpace, features: str | Path) -> SearchSettings:
        """The settings of a new search of `space` (validated; no file written)."""
        max_epochs = request.max_epochs or space.max_epochs
        _check(request, max_epochs)
        base = Config.from_dict(request.base.to_dict()) if request.base is not None else Config()
        for key, value in space.fixed.items():
            set_value(base, key, value)
        apply_overrides(base, request.overrides)
        full_epochs, full_patience = base.train.epochs, base.train.patience
        base.train.epochs = max_epochs  # ASHA stops early; the trial budget is max_epochs
        base.train.patience = 0
        base.train.seed = request.seed
        base.train.torch_threads = max(1, int(request.cpus_per_trial))
        base.data.features = str(features)
        Config.from_dict(base.to_dict())  # validates the base config before starting Ray
        scheduler = dict(space.scheduler)
        if scheduler.get("kind") == "asha":
            scheduler["grace_period"] = min(scheduler["grace_period"], max_epochs)
        return cls(space=space.name, space_source=str(space.path), features=str(features),
                   trials=request.trials or space.trials, concurrency=request.concurrency or space.concurrency,
                   max_epochs=max_epochs, cpus_per_trial=request.cpus_per_trial,
                   gpus_per_trial=request.gpus_per_trial, seed=request.seed, sampler=request.sampler,
                   confirm_seeds=request.confirm_seeds, top_k=request.top_k, metric=space.metric, mode=space.mode,
                   scheduler=scheduler, full_epochs=full_epochs, full_patience=full_patience, base=base.to_dict(),
                   created=time.strftime("%Y-%m-%dT%H:%M:%S"))

    @classmethod
    def load(cls, run_dir: Path) -> SearchSettings:
        raw = json.loads((run_dir / SETTINGS_FILE).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def save(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / SETTINGS_FILE, json.dumps(dataclasses.asdict(self), indent=2))

    @property
    def objective(self) -> str:
        """What Optuna, ASHA and Tune compare: `best_mean_pearson`, the best epoch's validation mean r so far
        (the training core reports it every epoch; best.yaml keeps that epoch's model); a space's other
        metric as reported, epoch by epoch."""
        return objective_key(self.metric, self.mode)

    def trial(self) -> TrialSpec:
        """What every trial trains, besides its sampled values."""
        return TrialSpec(base=self.base, features=self.features, stage1_root=self.stage1_root)

    def ray_root(self, run_dir: Path) -> str | Path:
        """Where the search's Tune experiments live: RUN/ray, or the --storage location (e.g. s3://...)."""
        return self.storage or run_dir / "ray"


def _check(request: SearchRequest, max_epochs: int) -> None:
    if request.sampler not in ("tpe", "random"):
        raise EmiError(f"sampler {request.sampler!r}: use tpe or random")
    if request.cpus_per_trial <= 0 or request.gpus_per_trial < 0:
        raise EmiError(f"--cpus-per-trial {request.cpus_per_trial} / --gpus-per-trial {request.gpus_per_trial}: "
                       f"need cpus > 0 and gpus >= 0")
    for name, v in (("--trials", request.trials), ("--concurrency", request.concurrency),
                    ("--max-epochs", max_epochs)):
        if v is not None and v < 1:
            raise EmiError(f"{name} {v}: must be >= 1")


def objective_key(metric: str, mode: str) -> str:
    """The reported key a search optimises for `metric` (see SearchSettings.objective)."""
    return f"best_{metric}" if metric == "mean_pearson" and mode == "max" else metric


def pointer_path(space: str) -> Path:
    return home() / "searches" / f"{space}.latest"


def dashboard_command(storage: Path) -> str:
    return f"optuna-dashboard sqlite:///{storage} --host 127.0.0.1 --port 8080"


def find_search(space: str | None, run_dir: str | Path | None) -> Path:
    """A search run dir: `run_dir` itself, or the latest search of `space` (its pointer file)."""
    if run_dir is not None:
        p = Path(run_dir).expanduser()
        if not (p / SETTINGS_FILE).is_file():
            raise EmiError(f"{p}: not a search run directory (no {SETTINGS_FILE})")
        return p.resolve()
    name = Path(space).stem if space else "fusion"
    ptr = pointer_path(name)
    if not ptr.is_file():
        raise EmiError(f"no search of space {name!r} yet ({ptr} missing); run `emi-ray tune --space {name}` "
                       f"or pass --out RUN")
    p = Path(ptr.read_text().strip())
    if not (p / SETTINGS_FILE).is_file():
        raise EmiError(f"{ptr} points to {p}, which is not a search run directory (moved or deleted?)")
    return p
