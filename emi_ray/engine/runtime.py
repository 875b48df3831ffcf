"""Process set-up shared by both training loops: seeding, torch threads, divergence."""

from __future__ import annotations

import random

import numpy as np
import torch

from emi_ray.distributed import world
from emi_ray.errors import EmiError

__all__ = ["TrainingDiverged", "agree", "check_finite", "seed_everything", "set_threads", "world"]


class TrainingDiverged(EmiError):
    """The loss became NaN or infinite (a bad learning rate or config)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    """torch's intra-op threads (0: torch's default, one per core)."""
    if n > 0:
        torch.set_num_threads(n)


def agree(flag: bool) -> bool:
    """True on every rank when rank 0 (or any rank) says so: a per-rank decision all ranks must share
    (e.g. whether this epoch reports to Ray, which every worker must do together)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([float(flag)])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def check_finite(loss: torch.Tensor, epoch: int, hint: str, what: str = "loss") -> None:
    """Raise TrainingDiverged naming the epoch and what to lower (`hint`, e.g. "train.lr_max")."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{what} became {loss.item()} at epoch {epoch} (lower {hint}?)")
