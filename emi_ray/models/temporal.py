"""Temporal Feature Enhancement for video (paper §3.3–3.4).

`TCN` is eq. 3 (stacked dilated residual convolutions); `segment_pool` is eq. 6
(segment-wise average pooling into M tokens). Both respect a (B, T) frame mask, so
zero-padding never changes what real frames see.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class TemporalBlock(nn.Module):
    """One residual dilated Conv1d block: x + Dropout(GELU(Conv(x))), 'same' padding."""

    def __init__(self, dim: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, dilation=dilation)
        total = dilation * (kernel - 1)  # 'same' padding; the extra one goes right if odd
        self.pad = (total // 2, total - total // 2)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        """x: (B, T, d); pad: (B, T, 1) bool, True = padded frame."""
        x = x.masked_fill(pad, 0.0)  # padded positions are zero before every conv
        y = self.conv(F.pad(x.transpose(1, 2), self.pad)).transpose(1, 2)
        return (x + self.drop(self.act(y))).masked_fill(pad, 0.0)


class TCN(nn.Module):
    """K residual dilated Conv1d blocks with dilation 2^k (eq. 3); layers=0 is identity."""

    def __init__(self, dim: int, layers: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(
            TemporalBlock(dim, kernel, 2**k, dropout) for k in range(layers)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, d) zero-padded; mask: (B, T) bool, True = real frame. Returns (B, T, d)."""
        if not self.blocks:
            return x
        pad = ~mask.bool().unsqueeze(-1)
        for block in self.blocks:
            x = block(x, pad)
        return x


def segment_weights(mask: Tensor, segments: int) -> Tensor:
    """(B, M, T) 0/1 weights: segment m of a sequence of real length L covers the real
    frames of rank [floor(mL/M), max(floor((m+1)L/M), floor(mL/M)+1)).

    Ranks count real frames only, so padding anywhere in the row is skipped. A row with
    L = 0 gets all-zero weights.
    """
    mask = mask.bool()
    lengths = mask.sum(1, keepdim=True)  # (B, 1)
    m = torch.arange(segments, device=mask.device).unsqueeze(0)  # (1, M)
    start = (m * lengths) // segments  # (B, M)
    end = torch.maximum(((m + 1) * lengths) // segments, start + 1)
    rank = (mask.long().cumsum(1) - 1).unsqueeze(1)  # (B, 1, T): index among real frames
    inside = (rank >= start.unsqueeze(-1)) & (rank < end.unsqueeze(-1)) & mask.unsqueeze(1)
    return inside


def segment_pool(x: Tensor, mask: Tensor, segments: int) -> Tensor:
    """Segment-wise average pooling (eq. 6): (B, T, d) → (B, M, d).

    Works for T < M and T = 1 (short sequences repeat frames); absent rows (L = 0) → zeros.
    """
    x = x.masked_fill(~mask.bool().unsqueeze(-1), 0.0)  # 0 * NaN padding would leak
    w = segment_weights(mask, segments).to(x.dtype)  # (B, M, T)
    count = w.sum(-1, keepdim=True).clamp(min=1.0)
    return torch.bmm(w, x) / count
