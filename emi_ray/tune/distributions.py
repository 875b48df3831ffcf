"""One `params` entry of a search space: its YAML spec -> an Optuna distribution, and back.

```yaml
model.fusion: {choice: [quality, mean, concat]}
model.fusion_layers: {int: [0, 3]}                 # inclusive bounds; step and log optional
model.dim: {int: [64, 256], step: 64}
model.dropout: {uniform: [0.0, 0.3], step: 0.05}   # step optional
train.lr_max: {loguniform: [1.0e-4, 3.0e-3]}
model.modalities: {choice: [[video, audio, text], [audio, text]]}
```
(An entry may also hold `when: {...}`, a condition: conditions.py parses it, spaces.py removes it first.)
A space holds Optuna's own distribution objects (plain data: compared, stored and sampled as
they are). The checks here come first because they name the config key and say what to write,
which Optuna's errors do not. List-valued choices reach Optuna as "a+b" strings (its categorical
choices must be scalars); `decode_value` turns them back into lists.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from emi_ray.config import Config, set_value
from emi_ray.errors import ConfigError

KINDS = {"choice": (), "int": ("step", "log"), "uniform": ("step",), "loguniform": ()}  # kind -> its options
LIST_KEYS = {f"{section}.{name}" for section, values in Config().to_dict().items()
             for name, value in values.items() if isinstance(value, list)}


def short_message(e: Exception) -> str:
    """A ConfigError's message without the long list of valid keys."""
    return str(e).split("; valid keys:")[0]


def encode_choice(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: ['video', 'audio'] -> 'video+audio'."""
    return "+".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def decode_value(key: str, value: Any) -> Any:
    """A sampled value as the config takes it: 'video+audio' -> ['video', 'audio'] for list settings."""
    return value.split("+") if key in LIST_KEYS and isinstance(value, str) else value


def _bad(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}")


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _setting_type(key: str) -> type:
    """The declared type of the config setting `key`, without its `| None` (ConfigError for a key the
    config does not have)."""
    section, _, name = key.partition(".")
    try:
        default = copy.deepcopy(getattr(getattr(Config(), section), name))
    except AttributeError:
        default = None
    try:
        set_value(Config(), key, default)
    except ConfigError as e:
        raise _bad(key, short_message(e) + " (see emi_ray/config.py for the keys)") from None
    hint = typing.get_type_hints(type(getattr(Config(), section)))[name]
    kinds = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(kinds) == 1:
        hint = kinds[0]
    return typing.get_origin(hint) or hint


def distribution(key: str, spec: Any) -> BaseDistribution:
    """The Optuna distribution of `params: {key: spec}`; a one-line ConfigError "KEY: ..." otherwise."""
    typ = _setting_type(key)
    if not isinstance(spec, dict):
        raise _bad(key, f"expected a distribution like {{choice: [...]}}, {{int: [lo, hi]}}, {{uniform: [lo, hi]}} "
                        f"or {{loguniform: [lo, hi]}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        unknown = [k for k in spec if k not in KINDS and k not in ("step", "log")]
        if unknown and not kinds:
            raise _bad(key, f"unknown distribution kind {unknown[0]!r}; use one of {', '.join(KINDS)}")
        raise _bad(key, f"give exactly one distribution kind ({', '.join(KINDS)}), got {sorted(spec)}")
    kind = kinds[0]
    extra = [k for k in spec if k != kind and k not in KINDS[kind]]
    if extra:
        hint = " (Optuna cannot quantise a log scale)" if kind == "loguniform" and extra == ["step"] else ""
        raise _bad(key, f"option {extra[0]!r} is not valid for {kind}{hint}; valid: {sorted(KINDS[kind]) or 'none'} "
                        f"(and `when`, a condition)")
    if kind == "choice":
        return _choice(key, spec["choice"])
    low, high, log = _bounds(key, kind, spec, typ)
    step = _step(key, kind, spec.get("step"), low, high, log)
    if kind == "int":
        return IntDistribution(low, high, step=step or 1, log=log)
    return FloatDistribution(low, high, step=step, log=log)


def _choice(key: str, choices: Any) -> CategoricalDistribution:
    if not isinstance(choices, list) or not choices:
        raise _bad(key, f"choice: expected a non-empty list, got {choices!r}")
    for c in choices:
        try:
            set_value(Config(), key, c)
        except ConfigError as e:
            raise _bad(key, f"choice {c!r}: {short_message(e)}") from None
        if isinstance(c, dict) or (isinstance(c, list) and any(isinstance(x, (list, dict)) for x in c)):
            raise _bad(key, f"choice {c!r}: choices must be scalars or flat lists")
    encoded = [encode_choice(c) for c in choices]
    if len(set(map(repr, encoded))) != len(encoded):
        raise _bad(key, f"choice: duplicate choices in {choices!r}")
    return CategoricalDistribution(encoded)


def _bounds(key: str, kind: str, spec: dict, typ: type) -> tuple[Any, Any, bool]:
    arg = spec[kind]
    if not (isinstance(arg, list) and len(arg) == 2 and all(is_number(x) for x in arg)):
        raise _bad(key, f"{kind}: expected [low, high] numbers, got {arg!r}")
    if kind == "int":
        if typ is not int:
            raise _bad(key, f"int: {key} is a {typ.__name__} setting; use uniform/loguniform or choice")
        if not all(float(x).is_integer() for x in arg):
            raise _bad(key, f"int: bounds must be integers, got {arg!r}")
        low, high = int(arg[0]), int(arg[1])
    elif typ is not float:
        raise _bad(key, f"{kind}: {key} is a {typ.__name__} setting; use {'int' if typ is int else 'choice'}")
    else:
        low, high = float(arg[0]), float(arg[1])
    if not low < high:
        raise _bad(key, f"{kind}: bad bounds {arg!r}: need low < high")
    log = spec.get("log", False) if kind == "int" else kind == "loguniform"
    if not isinstance(log, bool):
        raise _bad(key, f"log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise _bad(key, f"{kind}: bad bounds {arg!r}: a log scale needs low > 0")
    return low, high, log


def _step(key: str, kind: str, step: Any, low: float, high: float, log: bool) -> float | int | None:
    """Optuna would move `high` onto the step grid (with a warning); a space says it instead."""
    if step is None:
        return None
    if not is_number(step) or step <= 0 or step > high - low:
        raise _bad(key, f"step: expected a number in (0, high - low], got {step!r}")
    if kind == "int":
        if not float(step).is_integer():
            raise _bad(key, f"step: expected an integer for int, got {step!r}")
        if log and step != 1:
            raise _bad(key, "step: a log-scaled int needs step 1 (Optuna's rule)")
        if (high - low) % int(step):
            raise _bad(key, f"step: high - low = {high - low} is not a multiple of step {int(step)}")
        return int(step)
    ratio = (high - low) / step
    if not math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-8):
        raise _bad(key, f"step: high - low = {high - low:g} is not a multiple of step {step:g}")
    return float(step)


def to_spec(key: str, dist: BaseDistribution) -> dict[str, Any]:
    """The YAML spec of a distribution (what `distribution` parses back to it)."""
    if isinstance(dist, CategoricalDistribution):
        return {"choice": [decode_value(key, c) for c in dist.choices]}
    if isinstance(dist, FloatDistribution) and dist.log:
        return {"loguniform": [dist.low, dist.high]}
    spec: dict[str, Any] = {"int" if isinstance(dist, IntDistribution) else "uniform": [dist.low, dist.high]}
    if dist.step is not None and not (isinstance(dist, IntDistribution) and dist.step == 1):
        spec["step"] = dist.step
    if isinstance(dist, IntDistribution) and dist.log:
        spec["log"] = True
    return spec


def describe(key: str, dist: BaseDistribution) -> str:
    """One line for `emi-ray tune --list-spaces`: 'choice quality, mean', 'int [0, 3] step 1', ..."""
    spec = to_spec(key, dist)
    if "choice" in spec:
        return "choice " + ", ".join(str(c).lower() if isinstance(c, bool) else str(encode_choice(c))
                                     for c in spec["choice"])
    kind = next(k for k in spec if k in KINDS)
    low, high = spec[kind]
    text = f"{kind} [{_num(low)}, {_num(high)}]"
    if "step" in spec:
        text += f" step {_num(spec['step'])}"
    return text + (" log" if spec.get("log") else "")


def _num(x: float | int) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether `value` (a config value) is a point of `dist`."""
    if isinstance(dist, CategoricalDistribution):
        return encode_choice(value) in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not dist.low <= value <= dist.high:
        return False
    k = (value - dist.low) / dist.step if dist.step else 0.0
    return abs(k - round(k)) < 1e-9
