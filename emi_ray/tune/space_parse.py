"""Parsing one distribution or scheduler entry of a search-space file (see spaces.py).

`fail(key, message)` raises the ConfigError that names the file and the key.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from emi_ray.config import Config, set_value
from emi_ray.errors import ConfigError
from emi_ray.tune.spaces import Dist, encode_choice

KINDS = ("choice", "int", "uniform", "loguniform")
OPTIONS = {"choice": set(), "int": {"step", "log"}, "uniform": {"step"}, "loguniform": set()}
SCHEDULERS = ("asha", "none")


def short_message(e: Exception) -> str:
    """A ConfigError's message without the long list of valid keys."""
    msg = str(e)
    return msg.split("; valid keys:")[0]


def parse_dist(key: str, spec: Any, fail) -> Dist:
    probe = Config()
    try:
        set_value(probe, key, _default_of(key))
    except ConfigError as e:
        fail(key, short_message(e) + " (see emi_ray/config.py for the keys)")
    if not isinstance(spec, dict):
        fail(key, f"expected a distribution like {{choice: [...]}}, {{int: [lo, hi]}}, {{uniform: [lo, hi]}} "
                  f"or {{loguniform: [lo, hi]}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    others = [k for k in spec if k not in KINDS]
    if len(kinds) != 1:
        bad = others[0] if others and not kinds else None
        if bad is not None and bad not in {"step", "log"}:
            fail(key, f"unknown distribution kind {bad!r}; use one of {', '.join(KINDS)}")
        fail(key, f"give exactly one distribution kind ({', '.join(KINDS)}), got {sorted(spec)}")
    kind = kinds[0]
    extra = [k for k in others if k not in OPTIONS[kind]]
    if extra:
        hint = " (Optuna cannot quantise a log scale)" if kind == "loguniform" and extra == ["step"] else ""
        fail(key, f"option {extra[0]!r} is not valid for {kind}{hint}; valid: {sorted(OPTIONS[kind]) or 'none'}")
    arg = spec[kind]
    typ = type(getattr(getattr(probe, key.split(".")[0]), key.split(".")[1]))
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            fail(key, f"choice: expected a non-empty list, got {arg!r}")
        for c in arg:
            try:
                set_value(Config(), key, c)
            except ConfigError as e:
                fail(key, f"choice {c!r}: {short_message(e)}")
            if isinstance(c, (dict,)) or (isinstance(c, list) and any(isinstance(x, (list, dict)) for x in c)):
                fail(key, f"choice {c!r}: choices must be scalars or flat lists")
        enc = [encode_choice(c) for c in arg]
        if len(set(map(repr, enc))) != len(enc):
            fail(key, f"choice: duplicate choices in {arg!r}")
        return Dist("choice", choices=list(arg))
    if not (isinstance(arg, list) and len(arg) == 2 and all(_is_num(x) for x in arg)):
        fail(key, f"{kind}: expected [low, high] numbers, got {arg!r}")
    low, high = arg
    if kind == "int":
        if typ is not int:
            fail(key, f"int: {key} is a {typ.__name__} setting; use uniform/loguniform or choice")
        if not all(float(x).is_integer() for x in arg):
            fail(key, f"int: bounds must be integers, got {arg!r}")
        low, high = int(low), int(high)
    elif typ is not float:
        fail(key, f"{kind}: {key} is a {typ.__name__} setting; use "
                  f"{'int' if typ is int else 'choice'}")
    else:
        low, high = float(low), float(high)
    if not low < high:
        fail(key, f"{kind}: bad bounds {arg!r}: need low < high")
    log = spec.get("log", False) if kind == "int" else kind == "loguniform"
    if not isinstance(log, bool):
        fail(key, f"log: expected true or false, got {log!r}")
    if log and low <= 0:
        fail(key, f"{kind}: bad bounds {arg!r}: a log scale needs low > 0")
    step = spec.get("step")
    if step is not None:
        if not _is_num(step) or step <= 0 or step > high - low:
            fail(key, f"step: expected a number in (0, high - low], got {step!r}")
        if kind == "int":
            if not float(step).is_integer():
                fail(key, f"step: expected an integer for int, got {step!r}")
            if log and step != 1:
                fail(key, "step: a log-scaled int needs step 1 (Optuna's rule)")
            step = int(step)
            if (high - low) % step:
                fail(key, f"step: high - low = {high - low} is not a multiple of step {step}")
        else:
            step = float(step)
            ratio = (high - low) / step
            if not math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-8):
                fail(key, f"step: high - low = {high - low:g} is not a multiple of step {step:g}")
    for bound in (low, high):
        try:
            set_value(Config(), key, bound)
        except ConfigError as e:
            fail(key, short_message(e))
    return Dist(kind, low=low, high=high, step=step, log=bool(log))


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _default_of(key: str) -> Any:
    section, _, name = key.partition(".")
    try:
        return copy.deepcopy(getattr(getattr(Config(), section), name))
    except AttributeError:
        return None


def parse_scheduler(spec: Any, max_epochs: int, fail) -> dict[str, Any]:
    if spec is None or spec == "none":
        return {"kind": "none"}
    if spec == "asha":
        spec = {"kind": "asha"}
    if not isinstance(spec, dict):
        fail("scheduler", f"expected {{kind: asha, grace_period: 1, reduction_factor: 2}} or none, got {spec!r}")
    kind = spec.get("kind", "asha")
    if kind not in SCHEDULERS:
        fail("scheduler.kind", f"unknown scheduler {kind!r}; use asha or none")
    if kind == "none":
        return {"kind": "none"}
    unknown = sorted(set(spec) - {"kind", "grace_period", "reduction_factor"})
    if unknown:
        fail(f"scheduler.{unknown[0]}", "unknown option; asha takes grace_period and reduction_factor")
    grace = spec.get("grace_period", 1)
    rf = spec.get("reduction_factor", 2)
    if not isinstance(grace, int) or isinstance(grace, bool) or not 1 <= grace <= max_epochs:
        fail("scheduler.grace_period", f"expected an integer in [1, max_epochs={max_epochs}], got {grace!r}")
    if not _is_num(rf) or rf <= 1:
        fail("scheduler.reduction_factor", f"expected a number > 1, got {rf!r}")
    return {"kind": "asha", "grace_period": grace, "reduction_factor": rf}
