"""Rank and size of the torch.distributed group this process is in (0, 1 outside one).

A base module: the contrastive loss (models/) gathers across workers and the run engine
shards data and checkpoints on rank 0; both ask here.
"""

from __future__ import annotations

import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
