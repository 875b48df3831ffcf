"""What every stage-II design reads from a batch: the modality check, presence, masked means,
and the linear path (the ridge baseline's function class inside a model).

Batch format (data/batches.py): video/audio -> `m` (B, T, D) zero-padded, `m_mask` (B, T)
bool (True = real frame), `m_present` (B,) bool; text -> `text` (B, D), `text_present` (B,).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from emi_ray import MODALITIES
from emi_ray.config import ModelConfig
from emi_ray.errors import ConfigError

N_OUTPUTS = 6  # one intensity per emotion
INIT_OUTPUT = 0.2  # labels are sparse fractions (mean ~0.15): start the sigmoid near here


def check_modalities(cfg: ModelConfig, dims: dict[str, int]) -> list[str]:
    """cfg.modalities, each known and in the store's `dims` (ConfigError naming the fix)."""
    mods = list(cfg.modalities)
    if not mods:
        raise ConfigError(f"model.modalities is empty: choose a subset of {list(MODALITIES)}")
    for m in mods:
        if m not in MODALITIES:
            raise ConfigError(f"model.modalities: unknown modality {m!r}; choose from {list(MODALITIES)}")
        if m not in dims:
            raise ConfigError(
                f"modality {m!r} is in model.modalities but the features have no {m!r} "
                f"(available: {sorted(dims)}); extract it or drop it from model.modalities"
            )
    return mods


def text_presence(batch: dict[str, Tensor]) -> Tensor:
    """(B,) bool: which rows have a transcript vector (all, when the batch does not say)."""
    x, p = batch["text"], batch.get("text_present")
    return torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if p is None else p.bool()


def sequence_presence(batch: dict[str, Tensor], m: str) -> tuple[Tensor, Tensor]:
    """(mask (B, T), present (B,)): real frames of present rows; a row without frames is absent."""
    mask, p = batch[f"{m}_mask"].bool(), batch.get(f"{m}_present")
    present = mask.any(1) if p is None else p.bool() & mask.any(1)
    return mask & present.unsqueeze(1), present


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) -> (B, D): the mean over real frames; 0 for a row without any."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x.masked_fill(~mask.unsqueeze(-1), 0.0) * w).sum(1) / w.sum(1).clamp(min=1.0)


def pooled_inputs(batch: dict[str, Tensor], modalities: list[str]) -> Tensor:
    """(B, sum D) time means of each modality's (normalised) input, 0 where absent: what the
    ridge baseline regresses on."""
    parts = []
    for m in modalities:
        if m == "text":
            parts.append(batch[m] * text_presence(batch).unsqueeze(1).to(batch[m].dtype))
        else:
            parts.append(masked_mean(batch[m], sequence_presence(batch, m)[0]))
    return torch.cat(parts, dim=1)


class LinearPath(nn.Linear):
    """`model.linear_path`: logits of a linear map of the pooled inputs, added before a design's
    sigmoid (wide & deep). Starts at zero, so a model with it starts as the model without it;
    `linear_dropout` on its inputs stands in for the ridge penalty (it fits fast otherwise)."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], n_outputs: int):
        super().__init__(sum(int(dims[m]) for m in cfg.modalities), n_outputs)
        self.modalities = list(cfg.modalities)
        self.drop = nn.Dropout(cfg.linear_dropout)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return super().forward(self.drop(pooled_inputs(batch, self.modalities)))


def linear_path(cfg: ModelConfig, dims: dict[str, int]) -> LinearPath | None:
    return LinearPath(cfg, dims, N_OUTPUTS) if cfg.linear_path else None


def output_head(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear: the designs' regression head, its bias
    set so the sigmoid starts near the labels' mean."""
    head = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, N_OUTPUTS))
    with torch.no_grad():
        head[-1].bias.fill_(math.log(INIT_OUTPUT / (1 - INIT_OUTPUT)))
    return head
