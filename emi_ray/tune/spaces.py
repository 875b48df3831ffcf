"""Search spaces: YAML files of search settings and config key -> distribution (distributions.py).

```yaml
description: one line shown by `emi-ray tune --list-spaces`
metric: mean_pearson        # reported by the training core every epoch
mode: max
trials: 20                  # default --trials
max_epochs: 8               # default --max-epochs: epochs per trial (ASHA's max_t)
concurrency: 2              # default --concurrency: trials at once
scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}   # or {kind: none}
fixed:                      # optional: config values set for every trial
  data.max_len: 64
params:                     # config key -> one distribution (see distributions.py), in sampling order
  model.fusion: {choice: [quality, mean, concat]}
  model.fusion_layers: {int: [0, 2], when: {model.fusion: quality}}   # optional: see conditions.py
  train.lr_max: {loguniform: [1.0e-4, 3.0e-3]}
```
A space without `when` is flat: Ray's OptunaSearch gets a dict of distributions, as before conditions
existed (old searches' space.yaml copies are flat and resume that way); a conditional one gets a
define-by-run function (conditions.DefineByRun).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution

from emi_ray.config import Config, set_value
from emi_ray.errors import ConfigError
from emi_ray.io import load_yaml
from emi_ray.tune.conditions import Condition, DefineByRun, describe_when, holds, parse_when, when_spec
from emi_ray.tune.distributions import (
    contains,
    describe,
    distribution,
    encode_choice,
    is_number,
    short_message,
    to_spec,
)

SETTINGS = ("description", "metric", "mode", "trials", "max_epochs", "concurrency", "scheduler", "fixed", "params")
ASHA = {"kind": "asha", "grace_period": 1, "reduction_factor": 2}


def spaces_dir() -> Path:
    """Where named spaces live: $EMI_RAY_SPACES, else the package's search_spaces/ (package data, so
    an installed wheel has them; the repository's top-level search_spaces/ is a link to it)."""
    env = os.environ.get("EMI_RAY_SPACES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "search_spaces"


@dataclass
class SearchSpace:
    name: str
    path: Path
    params: dict[str, BaseDistribution]  # config key -> Optuna distribution, in the file's order
    description: str = ""
    metric: str = "mean_pearson"
    mode: str = "max"
    trials: int = 16
    max_epochs: int = 8
    concurrency: int = 2
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(ASHA))
    fixed: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)  # key -> its `when` (conditional keys only)

    def optuna_space(self) -> dict[str, BaseDistribution]:
        """Every parameter's distribution (conditional ones included)."""
        return dict(self.params)

    def searcher_space(self) -> dict[str, BaseDistribution] | DefineByRun:
        """What Ray's OptunaSearch samples: the distributions of a flat space, a define-by-run function otherwise."""
        return DefineByRun(dict(self.params), dict(self.conditions)) if self.conditions else self.optuna_space()

    def start_point(self, base: Config) -> dict[str, Any]:
        """The base config's values of the searched keys that lie in the space and whose condition the base
        config meets (TPE's first trial)."""
        point = {}
        for key, d in self.params.items():
            section, _, name = key.partition(".")
            value = getattr(getattr(base, section), name)
            if holds(self.conditions.get(key), point) and contains(d, value):
                point[key] = encode_choice(value)
        return point

    def covers(self, point: dict[str, Any]) -> bool:
        """Whether `point` holds every parameter a trial with these values samples (a whole trial)."""
        return all(k in point for k in self.params if holds(self.conditions.get(k), point))

    def _when(self, key: str, sep: str) -> str:
        return f"{sep}({describe_when(self.conditions[key])})" if key in self.conditions else ""

    def described(self) -> dict[str, str]:
        """key -> 'choice quality, concat  (when model.arch = ustc)', for --list-spaces and --dry-run --json."""
        return {k: describe(k, d) + self._when(k, "  ") for k, d in self.params.items()}

    def keys_line(self) -> str:
        """'model.arch, model.dim, model.fusion (when model.arch = ustc), ...': the searched keys in one line."""
        return ", ".join(k + self._when(k, " ") for k in self.params)

    def stage1_keys(self) -> list[str]:
        return sorted(k for k in [*self.params, *self.fixed] if k.startswith("stage1."))


def check_runnable(space: SearchSpace, features: str | Path) -> None:
    """A space with stage1 keys needs features that stage I can align (one clear error up front)."""
    if space.stage1_keys():
        from emi_ray.align.aligned_store import (
            store_encoders,  # reads the store's manifest only when needed
        )

        store_encoders(features)


def available_spaces() -> dict[str, Path]:
    d = spaces_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def resolve_space_path(name_or_path: str | Path) -> Path:
    s = str(name_or_path)
    p = Path(s).expanduser()
    if s.endswith((".yaml", ".yml")) or os.sep in s or p.is_file():
        if not p.is_file():
            raise ConfigError(f"{p}: search space file not found")
        return p
    spaces = available_spaces()
    if s not in spaces:
        raise ConfigError(f"--space {s!r}: no such search space; available: {', '.join(spaces) or 'none'} "
                          f"(in {spaces_dir()}), or give a path to a YAML file")
    return spaces[s]


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Parse and validate a space (by name from spaces_dir(), or a YAML path); errors name the file."""
    path = resolve_space_path(name_or_path).resolve()
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or "params" not in raw:
        raise ConfigError(f"{path}: expected a mapping with 'params' (config key -> distribution)")
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; valid settings: {', '.join(sorted(SETTINGS))}")
    try:
        return _parse(path, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _parse(path: Path, raw: dict[str, Any]) -> SearchSpace:
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("params: expected a mapping of config key -> distribution")
    if not params:
        raise ConfigError("params: no parameters to search")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError("fixed: expected a mapping of config key -> value")
    for key, value in fixed.items():
        try:
            set_value(Config(), str(key), value)
        except ConfigError as e:
            raise ConfigError(f"fixed.{key}: {short_message(e)}") from None
    settings: dict[str, Any] = {}
    for key, typ in (("metric", str), ("mode", str), ("trials", int), ("max_epochs", int), ("concurrency", int)):
        if key not in raw:
            continue
        v = raw[key]
        ok = isinstance(v, typ) and not isinstance(v, bool)
        ok = ok and (v in ("max", "min") if key == "mode" else bool(v) if typ is str else v >= 1)
        if not ok:
            want = "max or min" if key == "mode" else f"a positive {typ.__name__}"
            raise ConfigError(f"{key}: expected {want}, got {v!r}")
        settings[key] = v
    max_epochs = settings.get("max_epochs", SearchSpace.max_epochs)
    dists, conditions = _params(params)
    return SearchSpace(name=path.stem, path=path, description=str(raw.get("description", "")).strip(),
                       params=dists, conditions=conditions, fixed={str(k): v for k, v in fixed.items()},
                       scheduler=parse_scheduler(raw.get("scheduler", ASHA), max_epochs), **settings)


def _params(params: dict[Any, Any]) -> tuple[dict[str, BaseDistribution], dict[str, Condition]]:
    """The distributions, in file order, and the conditions of the conditional ones."""
    keys = [str(k) for k in params]
    dists: dict[str, BaseDistribution] = {}
    conditions: dict[str, Condition] = {}
    for key, spec in zip(keys, params.values(), strict=True):
        if isinstance(spec, dict) and "when" in spec:
            conditions[key] = parse_when(key, spec["when"], dists, keys)
            spec = {k: v for k, v in spec.items() if k != "when"}
        dists[key] = distribution(key, spec)
    return dists, conditions


def parse_scheduler(spec: Any, max_epochs: int) -> dict[str, Any]:
    if spec is None or spec == "none":
        return {"kind": "none"}
    if spec == "asha":
        spec = {"kind": "asha"}
    if not isinstance(spec, dict):
        raise ConfigError(f"scheduler: expected {{kind: asha, grace_period: 1, reduction_factor: 2}} or none, "
                          f"got {spec!r}")
    kind = spec.get("kind", "asha")
    if kind not in ("asha", "none"):
        raise ConfigError(f"scheduler.kind: unknown scheduler {kind!r}; use asha or none")
    if kind == "none":
        return {"kind": "none"}
    unknown = sorted(set(spec) - set(ASHA))
    if unknown:
        raise ConfigError(f"scheduler.{unknown[0]}: unknown option; asha takes grace_period and reduction_factor")
    grace, rf = spec.get("grace_period", 1), spec.get("reduction_factor", 2)
    if not isinstance(grace, int) or isinstance(grace, bool) or not 1 <= grace <= max_epochs:
        raise ConfigError(f"scheduler.grace_period: expected an integer in [1, max_epochs={max_epochs}], "
                          f"got {grace!r}")
    if not is_number(rf) or rf <= 1:
        raise ConfigError(f"scheduler.reduction_factor: expected a number > 1, got {rf!r}")
    return {"kind": "asha", "grace_period": grace, "reduction_factor": rf}


def list_spaces() -> list[dict[str, Any]]:
    """Every named space: name, path, description, settings, params (or the parse error)."""
    rows = []
    for name, path in available_spaces().items():
        try:
            s = load_space(path)
        except ConfigError as e:
            rows.append({"name": name, "path": path, "error": str(e)})
            continue
        rows.append({"name": name, "path": path, "description": s.description, "trials": s.trials,
                     "max_epochs": s.max_epochs, "concurrency": s.concurrency, "scheduler": s.scheduler,
                     "params": s.described(),
                     "needs_media_features": bool(s.stage1_keys())})
    return rows


def space_to_yaml(space: SearchSpace) -> str:
    """A self-contained copy of a space, kept in each search's run dir (load_space reads it back)."""
    doc = {"description": space.description, "metric": space.metric, "mode": space.mode,
           "trials": space.trials, "max_epochs": space.max_epochs, "concurrency": space.concurrency,
           "scheduler": space.scheduler, "fixed": space.fixed,
           "params": {k: {**to_spec(k, d), **({"when": when_spec(space.conditions[k])} if k in space.conditions
                                               else {})} for k, d in space.params.items()}}
    return f"# copy of {space.path} as used by this search\n" + yaml.safe_dump(doc, sort_keys=False)
