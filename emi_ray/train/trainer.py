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

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emi_ray.align.aligned_store import stage2_features
from emi_ray.config import Config, dump_config
from emi_ray.data.store import FeatureStore
from emi_ray.engine.checkpoints import STATE_FILE
from emi_ray.engine.outputs import write_history, write_metrics
from emi_ray.engine.progress import OnEpoch
from emi_ray.engine.provenance import write_provenance
from emi_ray.engine.rundir import check_run_dir, new_run_dir, ray_storage, run_lock, start_multi_run, storage_name
from emi_ray.engine.torch_run import run_on_worker, run_torch_trainer
from emi_ray.errors import EmiError
from emi_ray.io import atomic_path, atomic_write_text, join, resolved
from emi_ray.train.baseline import cached_baseline
from emi_ray.train.ensemble import evaluate_members, write_ensemble
from emi_ray.train.loop import Splits, fit, input_normalization

RAY_NAME = "train"


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]  # best epoch
    history: list[dict[str, Any]]


def worker_loop(payload: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the shared core with ray.train.report."""
    import ray.train.torch  # a Ray entry point: only worker processes import it

    cfg = Config.from_dict(payload["cfg"])
    splits = Splits(**payload["splits"]) if payload.get("splits") else None
    device = ray.train.torch.get_device()
    # a resumed run's checkpoint holds its own statistics; `fit` prefers those
    run_on_worker(payload, lambda resume_from, root, report: fit(
        cfg, payload["features"], report, resume_from=resume_from, device=device, checkpoint_root=root,
        splits=splits, normalization=payload.get("normalization")))


def run_training(cfg: Config, features: str | Path, run_dir: Path | None = None, resume: bool = False,
                 max_failures: int = 1, on_start: Callable[[Path], None] | None = None,
                 splits: Any = None, placement_strategy: str = "PACK",
                 storage: str | Path | None = None, on_epoch: OnEpoch | None = None) -> TrainResult:
    """Train under TorchTrainer (train.workers=0: in-process local mode) into a run directory.

    `storage` (a local directory or a URI such as s3://bucket/ray): Ray's storage for the run's
    checkpoints goes to STORAGE/<run name> instead of RUN/ray (with workers >= 1; in-process runs keep
    their checkpoints in RUN/checkpoints). The run directory still holds config, metrics and best.pt.
    `placement_strategy`, `on_epoch` (called as each epoch ends): see `engine.torch_run.run_torch_trainer`.
    """
    run_dir = Path(run_dir) if run_dir else new_run_dir()
    check_run_dir(run_dir, resume)
    cfg.data.features = str(resolved(features))  # the raw store; stage1.run maps it (stage2_features)
    stage2 = str(stage2_features(cfg, cfg.data.features))  # a bad stage1.run fails before RUN is made
    # once here, not per worker; a store without a train split or a constant modality fails before RUN is made
    norm = None if resume else input_normalization(cfg, stage2, splits)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):  # a second resume of this run gets one line naming this one
        storage_path = ray_storage(run_dir, storage, resume)
        dump_config(cfg, run_dir / "config.yaml")
        write_provenance(run_dir, "train", cfg.data.features, resume=resume, trained_on=stage2)
        if on_start:
            on_start(run_dir)
        payload = {"cfg": cfg.to_dict(), "features": stage2,
                   "splits": dataclasses.asdict(splits) if splits else None,
                   "normalization": None if norm is None else norm.to_state()}
        res = run_torch_trainer(worker_loop, payload, run_dir, name=RAY_NAME, workers=cfg.train.workers,
                                gpus=cfg.train.gpus_per_worker, storage=storage_path, max_failures=max_failures,
                                placement_strategy=placement_strategy, on_epoch=on_epoch,
                                collect=lambda d: write_run_outputs(run_dir, d))
        if splits is None:  # the reference on the same store and rows (k-fold members have their own rows)
            res.metrics["baseline"] = baseline_reference(stage2, cfg.model.modalities)
            write_metrics(run_dir, res.metrics)
        return res


def baseline_reference(features: str | Path, modalities: list[str]) -> dict[str, Any] | None:
    """The ridge baseline's validation scores on the store a run trained on (cached per store);
    None where it cannot be computed (the run itself has already succeeded)."""
    try:
        b = cached_baseline(features, modalities)
    except (EmiError, OSError, ValueError):  # e.g. no valid split, an unreachable cache: the run stands
        return None
    return {"mean_pearson": b["mean_pearson"], "per_emotion": b["per_emotion"], "alpha": b["alpha"]}


def write_run_outputs(run_dir: Path, ckpt_dir: Path) -> TrainResult:
    """From the last checkpoint: best.pt, metrics.json, history.csv, curve.png."""
    st = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=True)
    with atomic_path(run_dir / "best.pt") as tmp:
        torch.save({"model": st["best_ema"], "dims": st["dims"], "config": st["config"],
                    "normalization": st.get("normalization")}, tmp)
    if st.get("normalization"):
        atomic_write_text(run_dir / "normalization.json", json.dumps(st["normalization"]))
    metrics = {**st["best"], "epochs_run": len(st["history"])}
    write_metrics(run_dir, metrics)
    write_history(run_dir, st["history"])
    return TrainResult(run_dir=run_dir, metrics=metrics, history=st["history"])


def _train_member(cfg: Config, features: str | Path, run_dir: Path, name: str, resume: bool,
                  storage: str | Path | None, splits: Any = None) -> dict[str, Any]:
    """Train one member RUN/name of a multi-run job (or, resuming, keep it if finished); its best metrics."""
    member = run_dir / name
    if resume and (member / "metrics.json").exists():
        return json.loads((member / "metrics.json").read_text())
    return run_training(cfg, features, member, resume=resume and (member / "config.yaml").exists(),
                        splits=splits, storage=None if storage is None else join(storage, storage_name(run_dir))).metrics


def run_folds(cfg: Config, features: str | Path, folds: int, run_dir: Path | None = None,
              resume: bool = False, storage: str | Path | None = None) -> dict[str, Any]:
    """K-fold cross-validation over train+valid: one run directory per fold, mean and std.
    The folds' models form an ensemble (`emi-ray predict RUN` averages them)."""
    if folds < 2:
        raise EmiError(f"--folds {folds}: need at least 2 folds")
    store = FeatureStore(features)
    ids = np.array(sorted(store.ids("train") + store.ids("valid")))
    np.random.default_rng(cfg.train.seed).shuffle(ids)
    parts = np.array_split(ids, folds)
    run_dir = Path(run_dir) if run_dir else new_run_dir("cv")
    start_multi_run(run_dir, resume)
    write_ensemble(run_dir, [f"fold-{k}" for k in range(folds)], "folds")
    write_provenance(run_dir, "folds", features, resume=resume, folds=folds)
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
    if seeds < 2:
        raise EmiError(f"--seeds {seeds}: an ensemble needs at least 2 seeds")
    run_dir = Path(run_dir) if run_dir else new_run_dir("ensemble")
    start_multi_run(run_dir, resume)
    names = [f"seed-{cfg.train.seed + k}" for k in range(seeds)]
    write_ensemble(run_dir, names, "seeds")
    write_provenance(run_dir, "seeds", features, resume=resume, seeds=seeds)
    for k, name in enumerate(names):
        member_cfg = copy.deepcopy(cfg)
        member_cfg.train.seed = cfg.train.seed + k
        metrics = _train_member(member_cfg, features, run_dir, name, resume, storage)
        if on_member:
            on_member(name, metrics)
    result = {**evaluate_members([run_dir], split="valid"), "kind": "seeds", "run_dir": str(run_dir)}
    write_metrics(run_dir, result)
    return result
