"""`TrialSpec`: what one Ray Tune trial trains, and how it sits in Tune's trial config.

Tune's config of a trial is a dict: the spec under the key "trial", and beside it the values a
searcher sampled for this trial, as dotted config keys ({"trial": TrialSpec(...),
"model.dim": 128, ...}). A grid (confirmation seeds, ablation rows) varies whole specs instead:
{"trial": tune.grid_search([spec, ...])}, each spec with its own `overrides`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from emi_ray.config import Config, set_value, validate
from emi_ray.tune.distributions import decode_value

KEY = "trial"
TRIAL_DIR_PREFIX = "trial_"
LEGACY_KEYS = ("base", "features", "overrides", "splits", "stage1_root")  # trial configs before TrialSpec


@dataclass(frozen=True, repr=False)
class TrialSpec:
    """One trial's fixed inputs.

    base: the Config as a dict (every trial's starting point); features: the feature store (a path
    or URI); overrides: dotted config keys set on top (a grid point: an ablation row, a seed);
    stage1_root: for a search over stage1 keys, where the trials' stage-I runs live (one run per
    distinct stage1 config, align/aligned_store.py); the trial pretrains there or reuses a run.
    """

    base: dict[str, Any]
    features: str
    overrides: dict[str, Any] = field(default_factory=dict)
    stage1_root: str | None = None

    def config(self, sampled: dict[str, Any] | None = None) -> Config:
        """The trial's resolved Config: base, then overrides, then the sampled values (validated)."""
        cfg = Config.from_dict(self.base)
        for key, value in {**self.overrides, **(sampled or {})}.items():
            set_value(cfg, key, decode_value(key, value))
        validate(cfg)
        return cfg

    def with_overrides(self, overrides: dict[str, Any]) -> TrialSpec:
        return replace(self, overrides={**self.overrides, **overrides})

    def __str__(self) -> str:  # Tune names grid points (and logs configs) by str/repr: keep it short
        return ",".join(f"{k}={v}" for k, v in self.overrides.items()) or "base"

    def __repr__(self) -> str:
        return f"TrialSpec({self})"


def trial_dirname(trial) -> str:
    """Tune trial directory name: the trial id, so rows can be matched to trials."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def param_space(spec: Any, sampled: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune's param_space: a spec (or a grid_search of specs) and the searched keys beside it."""
    return {KEY: spec, **(sampled or {})}


def split_config(config: dict[str, Any]) -> tuple[TrialSpec, dict[str, Any]]:
    """(spec, sampled values) of a Tune trial config.

    Also reads the dicts that searches started before TrialSpec stored in Tune's snapshots
    ({"base": ..., "features": ..., "overrides": ..., "stage1_root": ..., sampled keys}), so
    their run directories still resume and summarise.
    """
    sampled = {k: v for k, v in config.items() if k != KEY and k not in LEGACY_KEYS}  # config keys are dotted
    if KEY in config:
        return config[KEY], sampled
    spec = TrialSpec(base=config["base"], features=config["features"], overrides=dict(config.get("overrides") or {}),
                     stage1_root=config.get("stage1_root"))
    return spec, sampled
