"""Weighted InfoNCE (paper eq. 2), one-directional or symmetric, negatives gathered across workers.

    modality_to_text (eq. 2):  L = L_m->t = -1/N sum_i w_i log [exp(s m_i.t_i) / sum_j exp(s m_i.t_j)]
    symmetric (CLIP-style):    L = 1/2 (L_m->t + L_t->m),  L_t->m = -1/N sum_i w_i log softmax_j(s t_i.m_j)[i]

with m, t L2-normalised, s = 1/tau the logit scale and w_i the confidence weights (all 1:
plain InfoNCE). Eq. (2) normalises over the texts j for each modality row i only; the
symmetric form also asks each text to pick out its own item among the batch's items. Like
open_clip's ClipLoss(local_loss=True, gather_with_grad=True): with a torch.distributed
process group up, every worker all-gathers the others' embeddings WITH gradient
(torch.distributed.nn.functional.all_gather) and scores its own rows against the global
batch. Each worker's loss is the mean over its rows, so the mean of the workers' losses is
the global-batch loss, and DDP's gradient averaging gives exactly the global-batch
gradient (equal per-worker batch sizes).
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dnn
import torch.nn.functional as F

from emi_ray.distributed import world

DIRECTIONS = ("modality_to_text", "symmetric")


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all workers (rank order); gradients flow back to each worker."""
    _, size = world()
    if size == 1:
        return x
    return torch.cat(dnn.all_gather(x), 0)


def weighted_info_nce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                      n: int | None = None) -> torch.Tensor:
    """-1/n sum_i w_i log softmax(logits_i)[targets_i]; n defaults to the row count."""
    nll = F.cross_entropy(logits, targets, reduction="none")
    if weights is not None:
        nll = nll * weights
    return nll.sum() / (n or logits.shape[0])


def clip_loss(m: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor | float,
              weights: torch.Tensor | None = None, direction: str = "modality_to_text") -> torch.Tensor:
    """Weighted InfoNCE of local rows `m` (modality) and `t` (text), (B, D) each, in `direction`.

    Inputs need not be normalised (they are here). Under a process group, rows of the
    other workers are the extra negatives.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}: choose {' or '.join(DIRECTIONS)}")
    m = F.normalize(m, dim=-1)
    t = F.normalize(t, dim=-1)
    rank, _ = world()
    b = m.shape[0]
    targets = torch.arange(b, device=m.device) + rank * b
    loss_m = weighted_info_nce(logit_scale * m @ gather_with_grad(t).T, targets, weights)
    if direction == "modality_to_text":
        return loss_m
    loss_t = weighted_info_nce(logit_scale * t @ gather_with_grad(m).T, targets, weights)
    return 0.5 * (loss_m + loss_t)
