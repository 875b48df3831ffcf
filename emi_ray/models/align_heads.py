"""Projection heads over frozen encoders (CLIP/CLAP style) and the temperature.

One head per modality (vision, audio, text: the text head is shared, so both pairs land
in one text space): LayerNorm -> Linear -> GELU -> Linear to `dim`. The temperature is
tau = stage1.temperature (0.07), fixed, or learnable as CLIP's log logit scale (clamped
to scale <= 100).
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_DIM = 256  # stage-I embedding width (the default of stage1.dim)


class Head(nn.Module):
    def __init__(self, d_in: int, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(dim, min(2 * d_in, 1024))
        self.net = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AlignHeads(nn.Module):
    def __init__(self, in_dims: dict[str, int], dim: int = DEFAULT_DIM, temperature: float = 0.07,
                 learnable_temperature: bool = False):
        super().__init__()
        self.in_dims, self.dim = dict(in_dims), dim
        self.heads = nn.ModuleDict({m: Head(d, dim) for m, d in in_dims.items()})
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.heads[modality](x)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.heads[modality](x), dim=-1)
