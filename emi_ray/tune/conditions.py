"""Conditional parameters: a `params` entry's `when`, and the define-by-run sampling that honours it.

```yaml
params:
  model.arch: {choice: [ustc, text_anchor, lstm_mlp]}
  model.fusion: {choice: [quality, concat], when: {model.arch: ustc}}          # one value
  model.lstm_layers: {int: [0, 2], when: {model.arch: [lstm_mlp, ustc]}}      # any of these values
```
A condition names parameters listed *before* it in the same space (so it is sampled first; this
also rules out cycles), each with one value or a list of values it takes; with several keys all
must hold. A trial samples a conditional parameter only when its condition holds on the values
sampled so far; the config of a trial that does not sample it keeps the base config's value.

Conditions hold encoded values, as Optuna samples them ('video+audio' for a list setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import BaseTrial

from emi_ray.errors import ConfigError
from emi_ray.tune.distributions import LIST_KEYS, contains, decode_value, describe, encode_choice

Condition = dict[str, tuple[Any, ...]]  # earlier parameter -> the (encoded) values that switch this one on


def parse_when(key: str, raw: Any, earlier: dict[str, BaseDistribution], keys: list[str]) -> Condition:
    """The condition of `params: {key: {..., when: raw}}`; `earlier`: the parameters listed before `key`,
    `keys`: every parameter of the space. A one-line ConfigError "KEY: when: ..." otherwise."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{key}: when: expected a mapping of an earlier parameter to its value(s), "
                          f"e.g. {{model.arch: ustc}}, got {raw!r}")
    condition: Condition = {}
    for parent, wanted in raw.items():
        parent = str(parent)
        if parent not in keys:
            raise ConfigError(f"{key}: when: {parent!r} is not a parameter of this space; name one of "
                              f"{', '.join(earlier) or '(none listed before it)'}")
        if parent not in earlier:
            raise ConfigError(f"{key}: when: {parent} is listed after {key} (or is {key} itself); a condition "
                              f"can only name a parameter listed before it: move {parent} up")
        values = _values(key, parent, wanted)
        dist = earlier[parent]
        for v in values:
            if not contains(dist, v):
                raise ConfigError(f"{key}: when: {parent} = {decode_value(parent, v)!r} is not a value {parent} "
                                  f"takes ({describe(parent, dist)})")
        condition[parent] = values
    return condition


def _values(key: str, parent: str, wanted: Any) -> tuple[Any, ...]:
    """One value or a list of them; for a list setting a value is itself a list ([audio, text])."""
    if parent in LIST_KEYS:
        many = isinstance(wanted, list) and bool(wanted) and all(isinstance(v, list) for v in wanted)
        values = wanted if many else [wanted]
    else:
        values = wanted if isinstance(wanted, list) else [wanted]
    if not values:
        raise ConfigError(f"{key}: when: {parent}: expected a value or a non-empty list of values")
    return tuple(encode_choice(v) for v in values)


def holds(condition: Condition | None, point: dict[str, Any]) -> bool:
    """Whether a parameter with `condition` is sampled, given the values sampled before it."""
    return all(k in point and point[k] in allowed for k, allowed in (condition or {}).items())


def describe_when(condition: Condition) -> str:
    """'when model.arch = ustc', 'when model.arch in ustc, lstm_mlp and ...'."""
    parts = []
    for k, values in condition.items():
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
        parts.append(f"{k} = {shown}" if len(values) == 1 else f"{k} in {shown}")
    return "when " + " and ".join(parts)


def when_spec(condition: Condition) -> dict[str, Any]:
    """The YAML `when` of a condition (what parse_when reads back)."""
    out = {}
    for k, values in condition.items():
        decoded = [decode_value(k, v) for v in values]
        out[k] = decoded[0] if len(decoded) == 1 else decoded
    return out


def suggest(trial: BaseTrial, key: str, dist: BaseDistribution) -> Any:
    """One value of `dist` from `trial` through its public suggest_* API (Ray's OptunaSearch records those)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


@dataclass(frozen=True)
class DefineByRun:
    """A conditional space as Ray Tune's OptunaSearch takes it: called with each new Optuna trial, it samples
    the parameters in file order, each conditional one only when its condition holds. A module-level class
    of plain data, because Tune pickles the searcher (and this) in its experiment snapshots."""

    params: dict[str, BaseDistribution]
    conditions: dict[str, Condition]

    def __call__(self, trial: BaseTrial) -> dict[str, Any]:
        point: dict[str, Any] = {}
        for key, dist in self.params.items():
            if holds(self.conditions.get(key), point):
                point[key] = suggest(trial, key, dist)
        return point
