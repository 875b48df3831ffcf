"""The one training core: `fit(cfg, features, report)`.

Ray-agnostic on purpose: Ray Train workers (`trainer.py`) and Ray Tune trials (`tune/`)
call the same function and pass their own `report(metrics, checkpoint_dir)`. When a
torch.distributed process group is up (Ray Train with several workers) the model is
wrapped in DDP and the data sharded with a DistributedSampler.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from emi_ray import EMOTIONS
from emi_ray.config import Config
from emi_ray.data.batches import Collator
from emi_ray.data.dataset import FeatureDataset
from emi_ray.data.normalize import Normalization, training_stats
from emi_ray.data.store import FeatureStore
from emi_ray.engine.checkpoints import load_state, report_with_checkpoint
from emi_ray.engine.report import Report
from emi_ray.engine.runtime import check_finite, seed_everything, set_threads, world
from emi_ray.engine.schedule import EMA, SGDR
from emi_ray.errors import EmiError
from emi_ray.metrics import mean_pearson
from emi_ray.models import create_model


@dataclass
class Splits:
    """Which store rows train and which validate (a split name or explicit ids)."""

    train: str | list[str] = "train"
    valid: str | list[str] = "valid"
    train_ids: list[int] | None = None
    valid_ids: list[int] | None = None


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, ds: FeatureDataset, batch_size: int = 64,
                   device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(ids, predictions (N, 6)) in dataset order."""
    model.eval()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=Collator(ds.dims))
    ids, preds = [], []
    for batch in loader:
        ids.append(batch["id"].numpy())
        preds.append(model(to_device(batch, torch.device(device))).float().cpu().numpy())
    return np.concatenate(ids), np.concatenate(preds)


def drop_modalities(batch: dict[str, torch.Tensor], mods: list[str], p: float) -> dict[str, torch.Tensor]:
    """Hide each modality of each video with probability p (never all of a video's).

    Trains the fusion to cope with missing or useless modalities instead of leaning on
    whichever input memorises the training set fastest.
    """
    if p <= 0 or len(mods) < 2:
        return batch
    present = torch.stack([batch[f"{m}_present"] for m in mods], 1)
    drop = (torch.rand(present.shape) < p) & present
    keep_one = (present & ~drop).any(1, keepdim=True)
    drop &= keep_one
    for k, m in enumerate(mods):
        batch[f"{m}_present"] = present[:, k] & ~drop[:, k]
        if f"{m}_mask" in batch:
            batch[f"{m}_mask"] = batch[f"{m}_mask"] & batch[f"{m}_present"][:, None]
    return batch


def training_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """MSE, or MSE + (1 - Pearson r of the batch, averaged over emotions): the score itself is a
    correlation, which MSE alone rewards only indirectly on sparse, mostly-zero labels."""
    mse = torch.nn.functional.mse_loss(pred, target)
    if kind == "mse":
        return mse
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    r = (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + 1e-8)
    return mse + (1 - r.mean())


def evaluate(model: torch.nn.Module, ds: FeatureDataset, device="cpu") -> dict[str, Any]:
    _, pred = predict_arrays(model, ds, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant early predictions: r = 0
        return mean_pearson(pred, ds.labels)


def resolve_splits(cfg: Config, features: str | Path, splits: Splits | None = None) -> Splits:
    """The rows a run trains and validates on: `splits` as given, else the store's train and valid
    splits, or with data.valid_fraction > 0 that share of the train clips (seeded by train.seed)."""
    if splits is not None:
        return splits
    if cfg.data.valid_fraction <= 0:
        return Splits()
    store = features if hasattr(features, "ids") else FeatureStore(features)  # a search trial's cached store
    ids = np.array(sorted(store.ids("train")))
    held = np.random.default_rng(cfg.train.seed).permutation(len(ids))[: max(1, round(cfg.data.valid_fraction * len(ids)))]
    mask = np.zeros(len(ids), bool)
    mask[held] = True
    return Splits(train="train", valid="train", train_ids=ids[~mask].tolist(), valid_ids=ids[mask].tolist())


def input_normalization(cfg: Config, features: str | Path, splits: Splits | None = None) -> Normalization | None:
    """The statistics a run normalises its inputs with: of its training rows only (never valid/test)."""
    splits = resolve_splits(cfg, features, splits)
    return training_stats(features, cfg.model.modalities, cfg.data.normalize, splits.train, splits.train_ids)


@dataclass
class _Run:
    """Everything one stage-II run trains with, built from its config and store."""

    train_ds: FeatureDataset
    valid_ds: FeatureDataset
    norm: Normalization | None
    model: torch.nn.Module
    net: torch.nn.Module  # the model, DDP-wrapped with several workers
    ema: EMA
    sampler: DistributedSampler
    loader: DataLoader
    opt: torch.optim.Optimizer
    sched: SGDR


def _datasets(cfg: Config, features: str | Path, splits: Splits, normalization: dict[str, Any] | None):
    if normalization is not None or cfg.data.normalize == "none":
        norm = None if normalization is None else Normalization.from_state(normalization)
    else:
        norm = input_normalization(cfg, features, splits)
    mods = cfg.model.modalities
    train_ds = FeatureDataset(features, splits.train, mods, cfg.data.max_len, ids=splits.train_ids,
                              normalization=norm)
    valid_ds = FeatureDataset(features, splits.valid, mods, cfg.data.max_len, ids=splits.valid_ids,
                              normalization=norm)
    if len(train_ds) == 0 or len(valid_ds) == 0:
        raise EmiError(f"{features}: empty training ({len(train_ds)}) or validation ({len(valid_ds)}) set")
    if np.isnan(train_ds.labels).any() or np.isnan(valid_ds.labels).any():
        raise EmiError(f"{features}: training/validation rows without labels")
    return train_ds, valid_ds, norm


def _build(cfg: Config, features: str | Path, splits: Splits, device: torch.device,
           normalization: dict[str, Any] | None) -> _Run:
    rank, world_size = world()
    train_ds, valid_ds, norm = _datasets(cfg, features, splits, normalization)
    model = create_model(cfg.model, train_ds.dims).to(device)
    net = model
    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.train.seed)
    loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler, collate_fn=Collator(train_ds.dims),
                        drop_last=len(train_ds) > cfg.train.batch_size * world_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr_max, weight_decay=cfg.train.weight_decay)
    sched = SGDR(opt, cfg.train.lr_max, cfg.train.lr_min, cfg.train.restart_epochs, len(loader))
    return _Run(train_ds, valid_ds, norm, model, net, EMA(model, cfg.train.ema_decay), sampler, loader, opt, sched)


def _train_epoch(run: _Run, cfg: Config, epoch: int, device: torch.device) -> tuple[float, float]:
    """One pass over the training rows: (mean training loss, seconds spent waiting for data)."""
    run.sampler.set_epoch(epoch)
    run.net.train()
    total, count, wait = 0.0, 0, 0.0
    t_fetch = time.perf_counter()
    for batch in run.loader:
        wait += time.perf_counter() - t_fetch
        batch = to_device(drop_modalities(batch, cfg.model.modalities, cfg.train.modality_dropout), device)
        loss = training_loss(run.net(batch), batch["labels"], cfg.train.loss)
        check_finite(loss, epoch, "train.lr_max")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
        run.opt.step()
        run.sched.step()
        run.ema.update(run.model)
        total += loss.item() * len(batch["id"])
        count += len(batch["id"])
        t_fetch = time.perf_counter()
    return total / max(count, 1), wait


def _state(run: _Run, cfg: Config, epoch: int, best: dict, history: list[dict], best_ema: dict | None) -> dict:
    """What a checkpoint holds: enough to resume bit-for-bit and to write the run's outputs."""
    return {"model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
            "best": best, "history": history, "best_ema": best_ema, "dims": run.train_ds.dims,
            "config": cfg.to_dict(), "normalization": None if run.norm is None else run.norm.to_state()}


def _restore(run: _Run, st: dict) -> tuple[int, dict, list[dict], dict | None]:
    run.model.load_state_dict(st["model"])
    run.ema.load_state_dict(st["ema"])
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    return st["epoch"] + 1, st["best"], st["history"], st["best_ema"]


def fit(cfg: Config, features: str | Path, report: Report, *, resume_from: str | Path | None = None,
        splits: Splits | None = None, device: torch.device | str = "cpu",
        checkpoint_root: str | Path | None = None, normalization: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train stage II; report each epoch; return the best epoch's metrics.

    Checkpoints go to a temp dir that `report` must copy (Ray does), or, with
    `checkpoint_root`, to `checkpoint_root/epoch-NNNN` (kept; older ones pruned).
    `normalization`: the input statistics' state (`Normalization.to_state()`) when the caller
    computed them already (the Ray Train driver does, once for all workers); a resumed run keeps
    those it started with; otherwise they are computed here.
    """
    device = torch.device(device)
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.torch_threads)
    st = load_state(resume_from, device)
    if st is not None and "normalization" in st:
        normalization = st["normalization"]
    run = _build(cfg, features, resolve_splits(cfg, features, splits), device, normalization)
    start, best, history, best_ema = 0, {"mean_pearson": -math.inf, "epoch": -1}, [], None
    if st is not None:
        start, best, history, best_ema = _restore(run, st)
        if start >= cfg.train.epochs or _stopped(history, best, cfg):
            report(history[-1], None)  # a finished run re-reports so the caller sees metrics
            return best
    for epoch in range(start, cfg.train.epochs):
        t0 = time.perf_counter()
        train_loss, wait = _train_epoch(run, cfg, epoch, device)
        scores = evaluate(run.ema.model, run.valid_ds, device)
        metrics = {"epoch": epoch, "train_loss": train_loss, "mean_pearson": scores["mean_pearson"],
                   **{f"r_{e}": scores["per_emotion"][e] for e in EMOTIONS},
                   "lr": run.sched.lr(), "epoch_s": time.perf_counter() - t0, "data_wait_s": wait}
        if metrics["mean_pearson"] > best["mean_pearson"]:
            best = {"mean_pearson": scores["mean_pearson"], "per_emotion": scores["per_emotion"], "epoch": epoch}
            best_ema = {k: v.detach().clone().cpu() for k, v in run.ema.model.state_dict().items()}
        metrics["best_mean_pearson"] = best["mean_pearson"]
        metrics["reported_at"] = time.time()  # wall clock: epoch-to-epoch time includes reporting
        history.append(metrics)
        state = _state(run, cfg, epoch, best, history, best_ema) if world()[0] == 0 else None
        report_with_checkpoint(report, metrics, state, checkpoint_root)
        if _stopped(history, best, cfg):
            break
    return best


def _stopped(history: list[dict], best: dict, cfg: Config) -> bool:
    p = cfg.train.patience
    return p > 0 and bool(history) and history[-1]["epoch"] - best["epoch"] >= p
