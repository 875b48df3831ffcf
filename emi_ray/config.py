"""Typed configs. Defaults follow the paper; YAML files and `--set a.b=c` override them.

Every knob the paper ablates is a field here, so an ablation is a config, not a code path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emi_ray import MODALITIES
from emi_ray.config_checks import validate
from emi_ray.errors import ConfigError
from emi_ray.io import atomic_write_text, load_yaml, read_yaml_mapping



@dataclass
class DataConfig:
    features: str | None = None  # feature store dir; None = the built-in synthetic default
    max_len: int = 64  # longer sequences are average-pooled by time down to this many steps
    normalize: str = "zscore"  # zscore | robust | whiten | none: input statistics of the train split
    valid_fraction: float = 0.0  # >0: validate on this share of the train split's clips (seeded), not on valid


@dataclass
class ModelConfig:
    arch: str = "ustc"  # ustc (the paper) | text_anchor | lstm_mlp: the design (docs/designs.md)
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    dim: int = 128  # shared space d
    tcn_layers: int = 3  # K dilated residual conv layers (dilation 2^k); 0 = no TCN
    tcn_kernel: int = 3
    segments: int = 4  # M segments for segment-wise average pooling; 1 = plain mean
    audio_hidden: int = 64  # BiLSTM hidden size per direction
    audio_gate: bool = True  # gated attention on BiLSTM outputs (eq. 7)
    fusion: str = "quality"  # quality (QAM) | mean | concat
    fusion_layers: int = 2  # Transformer encoder layers over fused tokens
    fusion_heads: int = 4
    dropout: float = 0.1
    linear_path: bool = False  # add a linear regressor over time-pooled inputs to the logits (wide & deep)
    linear_dropout: float = 0.0  # dropout on the linear path's pooled inputs
    lstm_hidden: int = 128  # lstm_mlp: BiLSTM hidden size per direction
    lstm_layers: int = 1  # lstm_mlp: stacked BiLSTM layers; 0 = time means of the inputs (concat_mlp)
    anchor_layers: int = 2  # text_anchor: cross-attention blocks (transcript queries over audio/video frames)
    anchor_queries: int = 4  # text_anchor: query tokens made from the transcript vector


@dataclass
class TrainConfig:
    epochs: int = 40  # paper: 20; with patience 6 a run stops when it plateaus (docs/defaults.md)
    batch_size: int = 16
    lr_max: float = 1e-3
    lr_min: float = 1e-5
    restart_epochs: int = 10  # SGDR cycle length T_i, in epochs
    weight_decay: float = 1e-2
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss: str = "mse+pearson"  # mse (the paper) | mse+pearson (+ 1 - batch r; docs/defaults.md)
    modality_dropout: float = 0.2  # per video and step, hide a modality with this probability (paper: 0)
    patience: int = 6  # early stopping on validation mean r; 0 = off
    seed: int = 0
    workers: int = 1  # Ray Train workers; 0 = in-process local mode
    gpus_per_worker: float = 0.0
    torch_threads: int = 1  # intra-op threads per worker (small models: more threads can be slower)


@dataclass
class Stage1Config:
    temperature: float = 0.07
    learnable_temperature: bool = False
    weighted: bool = True  # confidence weights w_i from the VA standard deviation (eq. 2)
    lr_max: float | None = None  # None: by mode, see stage1_rates (heads only 3e-3; backbone blocks 1e-5, the paper's)
    lr_min: float | None = None  # None: lr_max / 100
    restart_epochs: int = 10
    epochs: int = 50
    batch_size: int = 64
    train_blocks: int = 0  # 0 = projection heads only; N = also the last N backbone blocks
    checkpoint_every_s: float = 30.0  # a checkpoint (a Ray report) at most this often, and after the last epoch
    dim: int = 256  # width of the shared embedding space the heads project into
    run: str | None = None  # a stage-I run (`emi-ray pretrain`) whose heads map the features before stage II
    corpus: str | None = None  # affect corpus of stage-I search trials (None: the built-in synthetic one)
    models: str | None = None  # YAML of local model paths for stage-I trials' frozen encoders (clip, ...)
    direction: str = "modality_to_text"  # eq. (2): each modality row vs all texts | symmetric: CLIP's two-way mean
    granularity: str = "clip"  # what the heads train on: clip (mean over a clip's frames) | frame (single frames)


HEADS_LR = 3e-3  # heads trained from scratch: 1e-5 barely moves them (recall@1 near chance after 50 epochs)
BLOCKS_LR = 1e-5  # the paper's rate, for fine-tuning pretrained backbone blocks


def stage1_rates(s1: Stage1Config) -> tuple[float, float]:
    """(lr_max, lr_min) of a stage-I run: as set, else by mode (heads only or train_blocks > 0)."""
    lr_max = s1.lr_max if s1.lr_max is not None else (HEADS_LR if s1.train_blocks == 0 else BLOCKS_LR)
    return lr_max, s1.lr_min if s1.lr_min is not None else lr_max / 100


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        cfg = cls()
        for key, value in _flatten(d or {}).items():
            set_value(cfg, key, value)
        validate(cfg)
        return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def valid_keys(cfg: Config | None = None) -> list[str]:
    cfg = cfg or Config()
    return sorted(_flatten(cfg.to_dict()).keys())


def _field_type(obj: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    return hints[name]


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML value or a `--set` string to the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}") from None
    return value


def set_value(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in {f.name for f in dataclasses.fields(cfg)}:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    section = getattr(cfg, parts[0])
    names = {f.name for f in dataclasses.fields(section)}
    if parts[1] not in names:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    setattr(section, parts[1], _coerce(value, _field_type(section, parts[1]), key))


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply `key=value` strings (the CLI's `--set`)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. model.dim=64")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        set_value(cfg, key.strip(), value)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, ConfigError, "config file",
                                 "a mapping of sections (data, model, train, stage1)")
    try:
        cfg = Config.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return apply_overrides(cfg, overrides)


def dump_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
