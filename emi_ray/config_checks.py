"""Range and choice checks of a resolved config: `validate(cfg)` raises one ConfigError naming the key."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from emi_ray import MODALITIES
from emi_ray.errors import ConfigError

if TYPE_CHECKING:  # config.py imports this module
    from emi_ray.config import Config

LOSSES = ("mse", "mse+pearson")
ARCHS = ("ustc", "text_anchor", "lstm_mlp")  # the stage-II designs (docs/designs.md)
STAGE1_DIRECTIONS = ("modality_to_text", "symmetric")
STAGE1_GRANULARITIES = ("clip", "frame")


def _one_of(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def validate(cfg: Config) -> None:
    """Every value in range, or one ConfigError naming the key (checked once a config is resolved)."""
    _check_choices(cfg)
    _check_counts(cfg)
    _check_numbers(cfg)


def _check_choices(cfg: Config) -> None:
    m = cfg.model
    bad = [x for x in m.modalities if x not in MODALITIES]
    if not m.modalities or bad:
        raise ConfigError(
            f"model.modalities={m.modalities}: choose a non-empty subset of {list(MODALITIES)}"
        )
    for key, val, choices in (
        ("data.normalize", cfg.data.normalize, ("zscore", "robust", "whiten", "none")),
        ("train.loss", cfg.train.loss, LOSSES),
        ("model.arch", m.arch, ARCHS),
        ("model.fusion", m.fusion, ("quality", "mean", "concat")),
        ("stage1.direction", cfg.stage1.direction, STAGE1_DIRECTIONS),
        ("stage1.granularity", cfg.stage1.granularity, STAGE1_GRANULARITIES),
    ):
        if val not in choices:
            raise ConfigError(f"{key}={val!r}: choose {_one_of(choices)}")


def _check_counts(cfg: Config) -> None:
    m, t, s1 = cfg.model, cfg.train, cfg.stage1
    for key, val, lo in (
        ("model.dim", m.dim, 1),
        ("model.segments", m.segments, 1),
        ("model.tcn_kernel", m.tcn_kernel, 1),
        ("model.tcn_layers", m.tcn_layers, 0),
        ("model.fusion_layers", m.fusion_layers, 0),
        ("train.epochs", t.epochs, 1),
        ("train.batch_size", t.batch_size, 1),
        ("data.max_len", cfg.data.max_len, 1),
        ("model.fusion_heads", m.fusion_heads, 1),
        ("model.audio_hidden", m.audio_hidden, 1),
        ("model.lstm_hidden", m.lstm_hidden, 1),
        ("model.lstm_layers", m.lstm_layers, 0),
        ("model.anchor_layers", m.anchor_layers, 0),
        ("model.anchor_queries", m.anchor_queries, 1),
        ("train.restart_epochs", t.restart_epochs, 1),
        ("train.patience", t.patience, 0),
        ("train.workers", t.workers, 0),
        ("train.torch_threads", t.torch_threads, 0),
        ("stage1.restart_epochs", s1.restart_epochs, 1),
        ("stage1.batch_size", s1.batch_size, 1),
        ("stage1.dim", s1.dim, 1),
        ("stage1.train_blocks", s1.train_blocks, 0),
        ("stage1.epochs", s1.epochs, 1),
        ("stage1.checkpoint_every_s", s1.checkpoint_every_s, 0),
    ):
        if val < lo:
            raise ConfigError(f"{key}={val}: must be >= {lo}")
    if m.dim % m.fusion_heads:
        raise ConfigError(f"model.dim={m.dim} must be divisible by model.fusion_heads={m.fusion_heads}")


def _check_numbers(cfg: Config) -> None:
    m, t = cfg.model, cfg.train
    for key, val in (("model.dropout", m.dropout), ("model.linear_dropout", m.linear_dropout),
                     ("train.modality_dropout", t.modality_dropout), ("data.valid_fraction", cfg.data.valid_fraction),
                     ("train.ema_decay", t.ema_decay)):
        if not 0 <= val < 1:
            raise ConfigError(f"{key}={val}: must be in [0, 1)")
    for key in ("lr_max", "lr_min"):
        val = getattr(cfg.stage1, key)
        if val is not None and not (math.isfinite(val) and val >= 0):
            raise ConfigError(f"stage1.{key}={val}: must be a finite rate >= 0 (or none: by mode)")
    for key, val in (("train.lr_max", t.lr_max), ("train.lr_min", t.lr_min), ("train.weight_decay", t.weight_decay),
                     ("train.grad_clip", t.grad_clip), ("train.gpus_per_worker", t.gpus_per_worker),
                     ("stage1.temperature", cfg.stage1.temperature)):
        if not (math.isfinite(val) and val >= 0):
            raise ConfigError(f"{key}={val}: must be a finite number >= 0")
    if not cfg.stage1.temperature > 0:
        raise ConfigError(f"stage1.temperature={cfg.stage1.temperature}: must be > 0")
