"""The per-epoch callback both training loops call, and its Ray adapters.

A loop calls `report(metrics, checkpoint_dir)` once per epoch (checkpoint_dir: None on
ranks > 0 and when nothing is saved). Under Ray Train that is `ray.train.report`, in a
Ray Tune function trainable `tune.report`, in tests any callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

Report = Callable[[dict[str, Any], "str | None"], None]


def quiet_ray_loggers() -> None:
    """Ray logs one INFO line per report ("Checkpoint successfully created ..."): noise on a console."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def train_report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
    """Report from a Ray Train worker."""
    import ray.train  # a Ray entry point: the worker process pays for it, not the CLI's start

    ckpt = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
    ray.train.report(metrics, checkpoint=ckpt)


def tune_report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
    """Report from a Ray Tune function trainable."""
    from ray import tune  # a Ray entry point, as above

    ckpt = tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
    tune.report(metrics, checkpoint=ckpt)
