"""`emi-ray train`: the training core under a Ray Train TorchTrainer, writing a run directory.

Run directory (RUN):
  config.yaml    the resolved config (features path included)
  metrics.json   best epoch: mean_pearson, per_emotion, epoch (+ epochs run), and `baseline`: the ridge
                 baseline's validation scores on the same store (`emi-ray baseline`, cached per store)
  history.csv    one row per epoch (loss, validation r per emotion, lr, timings)
  best.pt        the best epoch's EMA weights + dims + config + input normalisation (torch.load(weights_only=True))
  normalization.json  the training split's per-dimension statistics the inputs were normalised with
  curve.png      learning curves
  ray/           Ray Train storage: checkpoints; a re-fit with the same name resumes
  storage.txt    with `--storage URI` only: where Ray's storage went instead (URI/RUN-NAME); --resume reads it
FEATURES may be a URI (s3://bucket/features); the config records it as given.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emi_ray.config import Config, dump_config
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, home, join, resolved

RAY_NAME = "train"
STORAGE_FILE = "storage.txt"


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]  # best epoch
    history: list[dict[str, Any]]


def new_run_dir(prefix: str = "train") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = home() / "runs"
    path = base / f"{prefix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{prefix}-{stamp}-{n}"
    return path


def worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the shared core with ray.train.report."""
    import logging

    import ray.train
    import ray.train.torch

    from emi_ray.train.loop import Splits, fit

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one INFO line per report is noise
    cfg = Config.from_dict(config["cfg"])
    splits = Splits(**config["splits"]) if config.get("splits") else None

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    device = ray.train.torch.get_device()
    local_root = config.get("local_checkpoints")
    if local_root:  # local mode (no workers): Ray keeps no checkpoints, so we do
        from emi_ray.train.loop import latest_checkpoint

        fit(cfg, config["features"], report, resume_from=latest_checkpoint(local_root), device=device,
            checkpoint_root=local_root, splits=splits, normalization=config.get("normalization"))
        return
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        fit(cfg, config["features"], report, device=device, splits=splits,
            normalization=config.get("normalization"))
        return
    with ckpt.as_directory() as d:  # a restarted worker group or a resumed run
        fit(cfg, config["features"], report, resume_from=d, device=device, splits=splits)

def ray_storage(run_dir: Path, storage: str | Path | None, resume: bool = False) -> str:
    """Where Ray keeps the run's checkpoints and experiment state: RUN/ray, or STORAGE/<run name> (e.g. on
    S3) when `storage` is given; recorded in RUN/storage.txt. A resumed run keeps the storage it started
    with (whatever --storage or EMI_RAY_STORAGE say now)."""
    recorded = run_dir / STORAGE_FILE
    if resume:
        return recorded.read_text().strip() if recorded.is_file() else str((run_dir / "ray").resolve())
    if storage is None:
        return str((run_dir / "ray").resolve())
    root = str(join(resolved(storage), run_dir.name))
    atomic_write_text(recorded, f"{root}\n")
    return root


def run_training(cfg: Config, features: str | Path, run_dir: Path | None = None, resume: bool = False,
                 max_failures: int = 1, on_start: Callable[[Path], None] | None = None,
                 splits: Any = None, placement_strategy: str = "PACK",
                 storage: str | Path | None = None) -> TrainResult:
    """Train under TorchTrainer (train.workers=0: in-process local mode) into a run directory.

    `storage` (a local directory or a URI such as s3://bucket/ray): Ray's storage for the run's
    checkpoints goes to STORAGE/<run name> instead of RUN/ray (with workers >= 1; in-process runs keep
    their checkpoints in RUN/checkpoints). The run directory still holds config, metrics and best.pt.

    `placement_strategy` is Ray's placement-group strategy for the worker group: "PACK"
    (default: fewest nodes) or "SPREAD" (one worker per node where possible, so a lost node
    costs one worker; the group restarts from the last checkpoint, `max_failures` times).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from emi_ray.align.stage2 import stage2_features
    from emi_ray.train.loop import input_normalization

    run_dir = Path(run_dir) if run_dir else new_run_dir()
    if (run_dir / "config.yaml").exists() and not resume:
        raise EmiError(f"{run_dir}: run directory exists; pass --resume to continue it or choose a new --out")
    if resume and not (run_dir / "config.yaml").exists():
        raise EmiError(f"{run_dir}: nothing to resume (no config.yaml)")
    cfg.data.features = str(resolved(features))  # the raw store; stage1.run maps it (stage2_features)
    stage2 = str(stage2_features(cfg, cfg.data.features))  # a bad stage1.run fails before RUN is made
    # once here, not per worker; a store without a train split or a constant modality fails before RUN is made
    norm = None if resume else input_normalization(cfg, stage2, splits)
    run_dir.mkdir(parents=True, exist_ok=True)
    storage_path = ray_storage(run_dir, storage, resume)
    dump_config(cfg, run_dir / "config.yaml")
    if on_start:
        on_start(run_dir)
    workers = cfg.train.workers
    gpus = cfg.train.gpus_per_worker
    if workers > 0 and not ray.is_initialized():
        from emi_ray.ray_env import init_ray

        init_ray()
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "features": stage2,
                           "local_checkpoints": None if workers else str(run_dir / "checkpoints"),
                           "splits": dataclasses.asdict(splits) if splits else None,
                           "normalization": None if norm is None else norm.to_state()},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": 1, **({"GPU": gpus} if gpus else {})},
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(
            storage_path=storage_path, name=RAY_NAME,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise EmiError(f"{run_dir}: training produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        res = write_run_outputs(run_dir, Path(d))
    if splits is None:  # the reference on the same store and rows (k-fold members have their own rows)
        res.metrics["baseline"] = baseline_reference(stage2, cfg.model.modalities)
        atomic_write_text(run_dir / "metrics.json", json.dumps(res.metrics, indent=2))
    return res


def baseline_reference(features: str | Path, modalities: list[str]) -> dict[str, Any] | None:
    """The ridge baseline's validation scores on the store a run trained on (cached per store);
    None where it cannot be computed (the run itself has already succeeded)."""
    from emi_ray.train.baseline import cached_baseline

    try:
        b = cached_baseline(features, modalities)
    except (EmiError, OSError, ValueError):  # e.g. no valid split, an unreachable cache: the run stands
        return None
    return {"mean_pearson": b["mean_pearson"], "per_emotion": b["per_emotion"], "alpha": b["alpha"]}


def write_run_outputs(run_dir: Path, ckpt_dir: Path) -> TrainResult:
    """From the last checkpoint: best.pt, metrics.json, history.csv, curve.png."""
    import torch

    from emi_ray.io import atomic_path
    from emi_ray.train.loop import STATE_FILE

    st = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=True)
    with atomic_path(run_dir / "best.pt") as tmp:
        torch.save({"model": st["best_ema"], "dims": st["dims"], "config": st["config"],
                    "normalization": st.get("normalization")}, tmp)
    if st.get("normalization"):
        atomic_write_text(run_dir / "normalization.json", json.dumps(st["normalization"]))
    metrics = {**st["best"], "epochs_run": len(st["history"])}
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_history(run_dir, st["history"])
    return TrainResult(run_dir=run_dir, metrics=metrics, history=st["history"])


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())
    from emi_ray.plots import learning_curve

    learning_curve(history, run_dir / "curve.png")


def _train_member(cfg: Config, features: str | Path, run_dir: Path, name: str, resume: bool,
                  storage: str | Path | None, splits: Any = None) -> dict[str, Any]:
    """Train one member RUN/name of a multi-run job (or, resuming, keep it if finished); its best metrics."""
    member = run_dir / name
    if resume and (member / "metrics.json").exists():
        return json.loads((member / "metrics.json").read_text())
    return run_training(cfg, features, member, resume=resume and (member / "config.yaml").exists(),
                        splits=splits, storage=None if storage is None else join(storage, run_dir.name)).metrics


def _start_multi_run(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise EmiError(f"{run_dir}: run directory exists; pass --resume to continue it or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)


def run_folds(cfg: Config, features: str | Path, folds: int, run_dir: Path | None = None,
              resume: bool = False, storage: str | Path | None = None) -> dict[str, Any]:
    """K-fold cross-validation over train+valid: one run directory per fold, mean and std.
    The folds' models form an ensemble (`emi-ray predict RUN` averages them)."""
    import numpy as np

    from emi_ray.data.store import FeatureStore
    from emi_ray.train.ensemble import write_ensemble
    from emi_ray.train.loop import Splits

    if folds < 2:
        raise EmiError(f"--folds {folds}: need at least 2 folds")
    store = FeatureStore(features)
    ids = np.array(sorted(store.ids("train") + store.ids("valid")))
    np.random.default_rng(cfg.train.seed).shuffle(ids)
    parts = np.array_split(ids, folds)
    run_dir = Path(run_dir) if run_dir else new_run_dir("cv")
    _start_multi_run(run_dir, resume)
    write_ensemble(run_dir, [f"fold-{k}" for k in range(folds)], "folds")
    scores = []
    for k, held in enumerate(parts):
        train_ids = sorted(set(ids.tolist()) - set(held.tolist()))
        splits = Splits(train=["train", "valid"], valid=["train", "valid"],
                        train_ids=train_ids, valid_ids=sorted(held.tolist()))
        scores.append(_train_member(cfg, features, run_dir, f"fold-{k}", resume, storage, splits)["mean_pearson"])
    summary = {"folds": folds, "mean_pearson": float(np.mean(scores)), "std": float(np.std(scores)),
               "per_fold": scores, "run_dir": str(run_dir)}
    atomic_write_text(run_dir / "cv.json", json.dumps(summary, indent=2))
    return summary


def run_seeds(cfg: Config, features: str | Path, seeds: int, run_dir: Path | None = None,
              resume: bool = False, storage: str | Path | None = None,
              on_member: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """An ensemble of `seeds` runs of one config (train.seed, +1, ...), RUN/seed-S each; returns the
    ensemble's validation metrics (averaged predictions) beside each member's, also in RUN/metrics.json."""
    import copy

    from emi_ray.train.ensemble import evaluate_members, write_ensemble

    if seeds < 2:
        raise EmiError(f"--seeds {seeds}: an ensemble needs at least 2 seeds")
    run_dir = Path(run_dir) if run_dir else new_run_dir("ensemble")
    _start_multi_run(run_dir, resume)
    names = [f"seed-{cfg.train.seed + k}" for k in range(seeds)]
    write_ensemble(run_dir, names, "seeds")
    for k, name in enumerate(names):
        member_cfg = copy.deepcopy(cfg)
        member_cfg.train.seed = cfg.train.seed + k
        metrics = _train_member(member_cfg, features, run_dir, name, resume, storage)
        if on_member:
            on_member(name, metrics)
    result = {**evaluate_members([run_dir], split="valid"), "kind": "seeds", "run_dir": str(run_dir)}
    atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    return result
