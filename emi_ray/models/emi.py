"""The stage-II EMI model (paper §3.3–3.5): per-modality branches into a shared space of M
tokens each (eq. 3–7), fusion and a Transformer regressor (eq. 8–10).

Batch format, per modality m in `cfg.modalities`:
  video/audio: batch[m] (B, T, D) zero-padded, batch[f"{m}_mask"] (B, T) bool (True = real
  frame, a prefix), batch[f"{m}_present"] (B,) bool; text: batch["text"] (B, D),
  batch["text_present"] (B,) bool.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emi_ray import MODALITIES
from emi_ray.config import ModelConfig
from emi_ray.errors import ConfigError
from emi_ray.models.audio import GatedBiLSTM
from emi_ray.models.fusion import FusionRegressor, mlp
from emi_ray.models.temporal import TCN, segment_pool


class VideoBranch(nn.Module):
    """Linear → TCN (eq. 3) → MLP (eq. 5) → segment-wise average pooling (eq. 6)."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.segments = cfg.segments
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.tcn = TCN(cfg.dim, cfg.tcn_layers, cfg.tcn_kernel, cfg.dropout)
        self.out = mlp(cfg.dim, cfg.dim, cfg.dim, cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return segment_pool(self.out(self.tcn(self.proj(x), mask)), mask, self.segments)


class AudioBranch(nn.Module):
    """Linear → BiLSTM + gated attention (eq. 4, 7) → MLP (eq. 5) → segment pooling."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.segments = cfg.segments
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.rnn = GatedBiLSTM(cfg.dim, cfg.audio_hidden, cfg.audio_gate, cfg.dropout)
        self.out = mlp(self.rnn.out_dim, cfg.dim, cfg.dim, cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return segment_pool(self.out(self.rnn(self.proj(x), mask)), mask, self.segments)


class TextBranch(nn.Module):
    """Linear → MLP (eq. 5), one vector broadcast to the M tokens."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.segments = cfg.segments
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.out = mlp(cfg.dim, cfg.dim, cfg.dim, cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.proj(x)).unsqueeze(1).expand(-1, self.segments, -1)


_BRANCHES = {"video": VideoBranch, "audio": AudioBranch, "text": TextBranch}


class EmiModel(nn.Module):
    """Predicts the six emotion intensities (B, 6) in [0, 1] from a padded batch."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.modalities = list(cfg.modalities)
        if not self.modalities:
            raise ConfigError(f"model.modalities is empty: choose a subset of {list(MODALITIES)}")
        for m in self.modalities:
            if m not in _BRANCHES:
                raise ConfigError(
                    f"model.modalities: unknown modality {m!r}; choose from {list(MODALITIES)}"
                )
            if m not in dims:
                raise ConfigError(
                    f"modality {m!r} is in model.modalities but the features have no {m!r} "
                    f"(available: {sorted(dims)}); extract it or drop it from model.modalities"
                )
        self.branches = nn.ModuleDict({m: _BRANCHES[m](int(dims[m]), cfg) for m in self.modalities})
        self.fusion = FusionRegressor(cfg, len(self.modalities))
        self.linear: nn.Linear | None = None
        if cfg.linear_path:  # the ridge baseline's function class inside the model, starting at zero
            self.linear = nn.Linear(sum(int(dims[m]) for m in self.modalities), 6)
            self.linear_dropout = nn.Dropout(cfg.linear_dropout)  # ~ the ridge penalty: it fits fast otherwise
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-modality tokens (B, n, M, d) (zero where absent) and presence (B, n) bool."""
        tokens, present = [], []
        for m in self.modalities:
            x, p = batch[m], batch.get(f"{m}_present")
            if m == "text":
                p = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if p is None else p.bool()
                t = self.branches[m](x.masked_fill(~p.unsqueeze(1), 0.0))
            else:
                mask = batch[f"{m}_mask"].bool()
                p = mask.any(1) if p is None else p.bool() & mask.any(1)
                mask = mask & p.unsqueeze(1)
                t = self.branches[m](x.masked_fill(~mask.unsqueeze(-1), 0.0), mask)
            tokens.append(t.masked_fill(~p.view(-1, 1, 1), 0.0))
            present.append(p)
        return torch.stack(tokens, 1), torch.stack(present, 1)

    def forward(
        self, batch: dict[str, Tensor], return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Returns (B, 6) predictions; with `return_weights` also the fusion weights β
        (B, M, n_modalities) in `cfg.modalities` order (None for fusion="concat")."""
        extra = None if self.linear is None else self.linear(self.linear_dropout(pooled_inputs(batch, self.modalities)))
        pred, weights = self.fusion(*self.encode(batch), extra_logits=extra)
        return (pred, weights) if return_weights else pred


def pooled_inputs(batch: dict[str, Tensor], modalities: list[str]) -> Tensor:
    """(B, sum D) time means of each modality's (normalised) input, 0 where absent: what the
    ridge baseline regresses on."""
    parts = []
    for m in modalities:
        x, p = batch[m], batch.get(f"{m}_present")
        if m == "text":
            keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if p is None else p.bool()
            parts.append(x * keep.unsqueeze(1).to(x.dtype))
            continue
        mask = batch[f"{m}_mask"].bool()
        if p is not None:
            mask = mask & p.bool().unsqueeze(1)
        w = mask.to(x.dtype).unsqueeze(-1)
        parts.append((x * w).sum(1) / w.sum(1).clamp(min=1.0))
    return torch.cat(parts, dim=1)


def create_model(cfg: ModelConfig, dims: dict[str, int]) -> EmiModel:
    """Build the model for `cfg.modalities`, with input dims from the feature store."""
    return EmiModel(cfg, dims)
