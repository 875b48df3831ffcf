"""Search spaces: YAML files mapping config keys to distributions, plus search settings.

```yaml
description: one line shown by `emi-ray tune --list-spaces`
metric: mean_pearson        # reported by the training core every epoch
mode: max
trials: 20                  # default --trials
max_epochs: 8               # default --max-epochs: epochs per trial (ASHA's max_t)
concurrency: 2              # default --concurrency: trials at once
scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}   # or {kind: none}
include: [fusion]           # optional: take these spaces' params too (a union)
fixed:                      # optional: config values set for every trial
  data.max_len: 64
params:                     # config key -> one distribution
  model.fusion: {choice: [quality, mean, concat]}
  model.fusion_layers: {int: [0, 3]}                 # inclusive bounds
  model.dim: {int: [64, 256], step: 64}              # or log: true
  model.dropout: {uniform: [0.0, 0.3], step: 0.05}   # step optional
  train.lr_max: {loguniform: [1.0e-4, 3.0e-3]}
  model.modalities: {choice: [[video, audio, text], [audio, text]]}
```
List-valued choices (model.modalities) reach Optuna as "a+b" strings: its categorical
choices must be scalars. `emi_ray.tune.trainable.decode_value` turns them back into lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emi_ray.config import Config, set_value
from emi_ray.errors import ConfigError

SETTINGS = {"description", "metric", "mode", "trials", "max_epochs", "concurrency", "scheduler",
            "include", "fixed", "params"}


def spaces_dir() -> Path:
    """Where named spaces live: $EMI_RAY_SPACES, else the package's search_spaces/ (package data, so
    an installed wheel has them; the repository's top-level search_spaces/ is a link to it)."""
    env = os.environ.get("EMI_RAY_SPACES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "search_spaces"


@dataclass
class Dist:
    """One distribution: `choice` (choices), `int`/`uniform`/`loguniform` (low, high, step, log)."""

    kind: str
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def to_optuna(self):
        import optuna.distributions as od

        if self.kind == "choice":
            return od.CategoricalDistribution([encode_choice(c) for c in self.choices])
        if self.kind == "int":
            return od.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "uniform":
            return od.FloatDistribution(self.low, self.high, step=self.step)
        return od.FloatDistribution(self.low, self.high, log=True)

    def contains(self, value: Any) -> bool:
        """Whether `value` (a config value) is a point of this distribution."""
        if self.kind == "choice":
            return encode_choice(value) in [encode_choice(c) for c in self.choices]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        return not self.step or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice " + ", ".join(encode_choice(c) if isinstance(c, list) else
                                         (str(c).lower() if isinstance(c, bool) else str(c)) for c in self.choices)
        s = f"{self.kind} [{_num(self.low)}, {_num(self.high)}]"
        if self.step:
            s += f" step {_num(self.step)}"
        if self.log and self.kind == "int":
            s += " log"
        return s


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def encode_choice(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: ['video', 'audio'] -> 'video+audio'."""
    return "+".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass
class SearchSpace:
    name: str
    path: Path
    params: dict[str, Dist]
    description: str = ""
    metric: str = "mean_pearson"
    mode: str = "max"
    trials: int = 16
    max_epochs: int = 8
    concurrency: int = 2
    scheduler: dict[str, Any] = field(default_factory=lambda: {"kind": "asha", "grace_period": 1,
                                                               "reduction_factor": 2})
    fixed: dict[str, Any] = field(default_factory=dict)

    def optuna_space(self) -> dict[str, Any]:
        return {k: d.to_optuna() for k, d in self.params.items()}

    def start_point(self, base: Config) -> dict[str, Any]:
        """The base config's values of the searched keys that lie in the space (TPE's first trial)."""
        point = {}
        for key, d in self.params.items():
            section, _, name = key.partition(".")
            value = getattr(getattr(base, section), name)
            if d.contains(value):
                point[key] = encode_choice(value)
        return point

    def stage1_keys(self) -> list[str]:
        return sorted(k for k in [*self.params, *self.fixed] if k.startswith("stage1."))


def check_runnable(space: SearchSpace, features: str | Path) -> None:
    """A space with stage1 keys needs features that stage I can align (one clear error up front)."""
    if space.stage1_keys():
        from emi_ray.align.stage2 import store_encoders

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


def load_space(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> SearchSpace:
    """Parse and validate a space (by name from spaces_dir(), or a YAML path)."""
    import yaml

    from emi_ray.tune.space_parse import short_message, parse_dist, parse_scheduler

    path = resolve_space_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(p.name for p in _seen)})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or "params" not in raw and "include" not in raw:
        raise ConfigError(f"{path}: expected a mapping with 'params' (config key -> distribution)")
    unknown = sorted(set(raw) - SETTINGS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; valid settings: {', '.join(sorted(SETTINGS))}")

    def fail(key: str, msg: str):
        raise ConfigError(f"{path}: {key}: {msg}")

    params: dict[str, Dist] = {}
    fixed: dict[str, Any] = {}
    includes = raw.get("include") or []
    if not isinstance(includes, list):
        fail("include", "expected a list of space names or paths")
    for inc in includes:
        if not isinstance(inc, str):
            fail("include", f"expected space names or paths, got {inc!r}")
        target: str | Path = inc  # a name beside this file, a path relative to it, or a named space
        if (path.parent / f"{inc}.yaml").is_file():
            target = path.parent / f"{inc}.yaml"
        elif (path.parent / inc).is_file():
            target = path.parent / inc
        try:
            sub = load_space(target, (*_seen, path))
        except ConfigError as e:
            raise ConfigError(f"{path}: include {inc!r}: {e}") from None
        params.update(sub.params)
        fixed.update(sub.fixed)

    own = raw.get("params") or {}
    if not isinstance(own, dict):
        fail("params", "expected a mapping of config key -> distribution")
    for key, spec in own.items():
        params[str(key)] = parse_dist(str(key), spec, fail)
    if not params:
        fail("params", "no parameters to search")

    fixed_raw = raw.get("fixed") or {}
    if not isinstance(fixed_raw, dict):
        fail("fixed", "expected a mapping of config key -> value")
    probe = Config()
    for key, value in fixed_raw.items():
        try:
            set_value(probe, str(key), value)
        except ConfigError as e:
            fail(f"fixed.{key}", short_message(e))
        fixed[str(key)] = value

    defaults = SearchSpace(name=path.stem, path=path, params={})
    settings: dict[str, Any] = {}
    for key, typ, check in (
        ("metric", str, lambda v: bool(v)),
        ("mode", str, lambda v: v in ("max", "min")),
        ("trials", int, lambda v: v >= 1),
        ("max_epochs", int, lambda v: v >= 1),
        ("concurrency", int, lambda v: v >= 1),
    ):
        if key in raw:
            v = raw[key]
            if not isinstance(v, typ) or isinstance(v, bool) or not check(v):
                want = "max or min" if key == "mode" else f"a positive {typ.__name__}"
                fail(key, f"expected {want}, got {v!r}")
            settings[key] = v
    scheduler = parse_scheduler(raw.get("scheduler", defaults.scheduler), settings.get("max_epochs",
                                                                                        defaults.max_epochs), fail)
    return SearchSpace(name=path.stem, path=path, params=params, fixed=fixed, scheduler=scheduler,
                       description=str(raw.get("description", "")).strip(), **settings)


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
                     "params": {k: d.describe() for k, d in s.params.items()},
                     "needs_media_features": bool(s.stage1_keys())})
    return rows


def space_to_yaml(space: SearchSpace) -> str:
    """A self-contained copy of a space (includes expanded), kept in each search's run dir."""
    import yaml

    params: dict[str, Any] = {}
    for key, d in space.params.items():
        if d.kind == "choice":
            spec: dict[str, Any] = {"choice": d.choices}
        else:
            spec = {d.kind: [d.low, d.high]}
            if d.step:
                spec["step"] = d.step
            if d.kind == "int" and d.log:
                spec["log"] = True
        params[key] = spec
    doc = {"description": space.description, "metric": space.metric, "mode": space.mode,
           "trials": space.trials, "max_epochs": space.max_epochs, "concurrency": space.concurrency,
           "scheduler": space.scheduler, "fixed": space.fixed, "params": params}
    return f"# copy of {space.path} as used by this search\n" + yaml.safe_dump(doc, sort_keys=False)
