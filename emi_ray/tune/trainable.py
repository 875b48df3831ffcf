"""The Ray Tune function trainable: the shared training core, reporting with tune.report.

Pattern B of ray-2.60-notes.md: a plain function trainable that trains in-process, run
with `reuse_actors=True` (~1 s overhead per trial instead of ~20 s for a TorchTrainer).
Trial config: {"base": Config dict, "features": path, "overrides": {dotted key: value}}
plus, for searches, the sampled parameters as top-level dotted keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from emi_ray.config import Config, set_value, validate

RESERVED = ("base", "features", "overrides", "splits")
_STORES: dict[str, Any] = {}


def cached_store(features: str | Path):
    """A FeatureStore whose Parquet reads stay in memory for this worker process.

    With `reuse_actors=True` one actor runs many trials; reading the train and valid
    shards again for each would cost seconds per trial. Reads still go split by split
    through `FeatureStore.shards_of`, so a search never opens test shards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emi_ray.data.store import FeatureStore

    class CachedStore(FeatureStore):
        def __init__(self, root):
            super().__init__(root)
            self._cols: dict[tuple[str, int, str], Any] = {}

        def __str__(self) -> str:
            return str(self.root)

        def __fspath__(self) -> str:
            return str(self.root)

        def read(self, columns: list[str], split=None) -> pa.Table:
            shards = self.shards_of(split)
            if not shards:
                return super().read(columns, split)
            tables = []
            for p in shards:
                stamp = p.stat().st_mtime_ns
                missing = [c for c in columns if (str(p), stamp, c) not in self._cols]
                if missing:
                    t = pq.read_table(p, columns=missing, use_threads=False, pre_buffer=False)
                    for c in missing:
                        self._cols[(str(p), stamp, c)] = t.column(c)
                tables.append(pa.table({c: self._cols[(str(p), stamp, c)] for c in columns}))
            return pa.concat_tables(tables)

    key = str(Path(features).resolve())
    store = _STORES.get(key)
    if store is None or sorted(store.root.joinpath("shards").glob("*-*.parquet")) != store.shards:
        _STORES.clear()  # one store per worker process: a new search's store replaces the old one
        store = _STORES[key] = CachedStore(key)
    return store


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
    store = cached_store(config["features"])
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        fit(cfg, store, report, splits=splits, device=device)
        return
    with ckpt.as_directory() as d:
        fit(cfg, store, report, resume_from=d, splits=splits, device=device)
