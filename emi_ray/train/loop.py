"""The one training core: `fit(cfg, features, report)`.

Ray-agnostic on purpose: Ray Train workers (`trainer.py`) and Ray Tune trials (`tune/`)
call the same function and pass their own `report(metrics, checkpoint_dir)`. When a
torch.distributed process group is up (Ray Train with several workers) the model is
wrapped in DDP and the data sharded with a DistributedSampler.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from emi_ray import EMOTIONS
from emi_ray.config import Config
from emi_ray.data.batches import Collator
from emi_ray.data.dataset import FeatureDataset
from emi_ray.data.normalize import Normalization, training_stats
from emi_ray.errors import EmiError
from emi_ray.metrics import mean_pearson
from emi_ray.models import create_model
from emi_ray.train.schedule import EMA, SGDR

STATE_FILE = "state.pt"
Report = Callable[[dict[str, Any], "str | None"], None]


class TrainingDiverged(EmiError):
    """The loss became NaN or infinite (a bad learning rate or config)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Splits:
    """Which store rows train and which validate (a split name or explicit ids)."""

    train: str | list[str] = "train"
    valid: str | list[str] = "valid"
    train_ids: list[int] | None = None
    valid_ids: list[int] | None = None


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
    import warnings

    _, pred = predict_arrays(model, ds, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant early predictions: r = 0
        return mean_pearson(pred, ds.labels)


def input_normalization(cfg: Config, features: str | Path, splits: Splits | None = None) -> Normalization | None:
    """The statistics a run normalises its inputs with: of its training rows only (never valid/test)."""
    splits = splits or Splits()
    return training_stats(features, cfg.model.modalities, cfg.data.normalize, splits.train, splits.train_ids)


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
    splits = splits or Splits()
    device = torch.device(device)
    rank, world = _world()
    seed_everything(cfg.train.seed)
    if cfg.train.torch_threads > 0:
        torch.set_num_threads(cfg.train.torch_threads)
    mods = cfg.model.modalities
    st = None if resume_from is None else torch.load(Path(resume_from) / STATE_FILE, map_location=device,
                                                      weights_only=True)
    if st is not None and "normalization" in st:
        normalization = st["normalization"]
    if normalization is not None or cfg.data.normalize == "none":
        norm = None if normalization is None else Normalization.from_state(normalization)
    else:
        norm = input_normalization(cfg, features, splits)
    train_ds = FeatureDataset(features, splits.train, mods, cfg.data.max_len, ids=splits.train_ids,
                              normalization=norm)
    valid_ds = FeatureDataset(features, splits.valid, mods, cfg.data.max_len, ids=splits.valid_ids,
                              normalization=norm)
    if len(train_ds) == 0 or len(valid_ds) == 0:
        raise EmiError(f"{features}: empty training ({len(train_ds)}) or validation ({len(valid_ds)}) set")
    if np.isnan(train_ds.labels).any() or np.isnan(valid_ds.labels).any():
        raise EmiError(f"{features}: training/validation rows without labels")

    model = create_model(cfg.model, train_ds.dims).to(device)
    ema = EMA(model, cfg.train.ema_decay)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
    loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler,
                        collate_fn=Collator(train_ds.dims), drop_last=len(train_ds) > cfg.train.batch_size * world)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr_max, weight_decay=cfg.train.weight_decay)
    sched = SGDR(opt, cfg.train.lr_max, cfg.train.lr_min, cfg.train.restart_epochs, len(loader))

    start, best, history = 0, {"mean_pearson": -math.inf, "epoch": -1}, []
    best_ema = None
    if st is not None:
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["torch_rng"])
        start, best, history, best_ema = st["epoch"] + 1, st["best"], st["history"], st["best_ema"]
        if start >= cfg.train.epochs or _stopped(history, best, cfg):
            report(history[-1], None)  # a finished run re-reports so the caller sees metrics
            return best

    for epoch in range(start, cfg.train.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        total, count, wait = 0.0, 0, 0.0
        t_fetch = time.perf_counter()
        for batch in loader:
            wait += time.perf_counter() - t_fetch
            batch = to_device(drop_modalities(batch, mods, cfg.train.modality_dropout), device)
            loss = training_loss(net(batch), batch["labels"], cfg.train.loss)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch} (lower train.lr_max?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
            ema.update(model)
            total += loss.item() * len(batch["id"])
            count += len(batch["id"])
            t_fetch = time.perf_counter()
        scores = evaluate(ema.model, valid_ds, device)
        metrics = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "mean_pearson": scores["mean_pearson"],
            **{f"r_{e}": scores["per_emotion"][e] for e in EMOTIONS},
            "lr": sched.lr(),
            "epoch_s": time.perf_counter() - t0,
            "data_wait_s": wait,
        }
        if metrics["mean_pearson"] > best["mean_pearson"]:
            best = {"mean_pearson": scores["mean_pearson"], "per_emotion": scores["per_emotion"], "epoch": epoch}
            best_ema = {k: v.detach().clone().cpu() for k, v in ema.model.state_dict().items()}
        metrics["best_mean_pearson"] = best["mean_pearson"]
        metrics["reported_at"] = time.time()  # wall clock: epoch-to-epoch time includes reporting
        history.append(metrics)
        state = {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
            "best": best, "history": history, "best_ema": best_ema,
            "dims": train_ds.dims, "config": cfg.to_dict(),
            "normalization": None if norm is None else norm.to_state(),
        }
        _report_with_checkpoint(report, metrics, state if rank == 0 else None, checkpoint_root)
        if _stopped(history, best, cfg):
            break
    return best


def _stopped(history: list[dict], best: dict, cfg: Config) -> bool:
    p = cfg.train.patience
    return p > 0 and bool(history) and history[-1]["epoch"] - best["epoch"] >= p


def _report_with_checkpoint(report: Report, metrics: dict, state: dict | None,
                            root: str | Path | None) -> None:
    if state is None:
        report(metrics, None)
        return
    if root is None:
        with tempfile.TemporaryDirectory(prefix="emi-ckpt-") as d:
            torch.save(state, Path(d) / STATE_FILE)
            report(metrics, d)
        return
    import shutil

    from emi_ray.io import atomic_path

    d = Path(root) / f"epoch-{state['epoch']:04d}"
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / STATE_FILE) as tmp:
        torch.save(state, tmp)
    report(metrics, str(d))
    for old in Path(root).glob("epoch-*"):
        if old != d:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = sorted(p for p in Path(root).glob("epoch-*") if (p / STATE_FILE).exists())
    return found[-1] if found else None
