"""The Ray Tune function trainable: the shared training core, reporting with tune.report.

Pattern B of ray-2.60-notes.md: a plain function trainable that trains in-process, run
with `reuse_actors=True` (~1 s overhead per trial instead of ~20 s for a TorchTrainer).
Trial config: {"base": Config dict, "features": path, "overrides": {dotted key: value}}
plus, for searches, the sampled parameters as top-level dotted keys. A search over stage1
keys adds "stage1_root": the trial first gets its stage-I run (pretrained there once per
stage1 config, align/stage2.py), then trains stage II on the features mapped by it.
"""

from __future__ import annotations

import logging
from typing import Any

from emi_ray.config import Config, set_value, validate

RESERVED = ("base", "features", "overrides", "splits", "stage1_root")


def decode_value(key: str, value: Any) -> Any:
    """Search spaces encode list choices as 'a+b+c' strings (Optuna takes scalars only)."""
    if key == "model.modalities" and isinstance(value, str):
        return value.split("+")
    return value


def trial_config(config: dict[str, Any]) -> Config:
    cfg = Config.from_dict(config["base"])
    params = {**config.get("overrides", {}), **{k: v for k, v in config.items() if k not in RESERVED}}
    for key, value in params.items():
        set_value(cfg, key, decode_value(key, value))
    validate(cfg)
    return cfg


def train_trial(config: dict[str, Any]) -> None:
    """Runs one trial; resumes from Tune's checkpoint after a restore or a retry."""
    from ray import tune

    from emi_ray.train.loop import Splits, fit

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "Checkpoint successfully created" per epoch
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    cfg = trial_config(config)
    splits = Splits(**config["splits"]) if config.get("splits") else None

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        ckpt = tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        tune.report(metrics, checkpoint=ckpt)

    import ray
    import torch

    # A trial given GPUs (--gpus-per-trial) sees them via CUDA_VISIBLE_DEVICES.
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    from emi_ray.align.stage2 import pretrained_run, stage2_features
    from emi_ray.tune.store_cache import cached_store

    if config.get("stage1_root"):
        cfg.stage1.run = str(pretrained_run(cfg, config["features"], config["stage1_root"]))
    store = cached_store(stage2_features(cfg, config["features"]), cfg.data.max_len)
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        fit(cfg, store, report, splits=splits, device=device)
        return
    with ckpt.as_directory() as d:
        fit(cfg, store, report, resume_from=d, splits=splits, device=device)
