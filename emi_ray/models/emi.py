"""The stage-II EMI model (paper §3.3–3.5): per-modality branches into a shared space of M
tokens each (eq. 3–7), fusion and a Transformer regressor (eq. 8–10); and `create_model`, which
builds it or one of the leaderboard's other designs (model.arch; lstm_mlp.py, text_anchor.py).

Batch format, per modality m in `cfg.modalities`:
  video/audio: batch[m] (B, T, D) zero-padded, batch[f"{m}_mask"] (B, T) bool (True = real
  frame, a prefix), batch[f"{m}_present"] (B,) bool; text: batch["text"] (B, D),
  batch["text_present"] (B,) bool.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emi_ray.config import ModelConfig
from emi_ray.errors import ConfigError
from emi_ray.models.audio import GatedBiLSTM
from emi_ray.models.fusion import FusionRegressor, mlp
from emi_ray.models.inputs import (  # noqa: F401  (pooled_inputs: re-exported, its old home)
    check_modalities,
    linear_path,
    pooled_inputs,
    sequence_presence,
    text_presence,
)
from emi_ray.models.lstm_mlp import LstmMlpModel
from emi_ray.models.temporal import TCN, segment_pool
from emi_ray.models.text_anchor import TextAnchorModel


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
    """The paper's design (model.arch=ustc): predicts the six intensities (B, 6) in [0, 1]."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.modalities = check_modalities(cfg, dims)
        self.branches = nn.ModuleDict({m: _BRANCHES[m](int(dims[m]), cfg) for m in self.modalities})
        self.fusion = FusionRegressor(cfg, len(self.modalities))
        self.linear = linear_path(cfg, dims)

    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-modality tokens (B, n, M, d) (zero where absent) and presence (B, n) bool."""
        tokens, present = [], []
        for m in self.modalities:
            x = batch[m]
            if m == "text":
                p = text_presence(batch)
                t = self.branches[m](x.masked_fill(~p.unsqueeze(1), 0.0))
            else:
                mask, p = sequence_presence(batch, m)
                t = self.branches[m](x.masked_fill(~mask.unsqueeze(-1), 0.0), mask)
            tokens.append(t.masked_fill(~p.view(-1, 1, 1), 0.0))
            present.append(p)
        return torch.stack(tokens, 1), torch.stack(present, 1)

    def forward(
        self, batch: dict[str, Tensor], return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Returns (B, 6) predictions; with `return_weights` also the fusion weights β
        (B, M, n_modalities) in `cfg.modalities` order (None for fusion="concat")."""
        extra = None if self.linear is None else self.linear(batch)
        pred, weights = self.fusion(*self.encode(batch), extra_logits=extra)
        return (pred, weights) if return_weights else pred


_ARCHS = {"ustc": EmiModel, "text_anchor": TextAnchorModel, "lstm_mlp": LstmMlpModel}


def create_model(cfg: ModelConfig, dims: dict[str, int]) -> nn.Module:
    """Build the design `cfg.arch` for `cfg.modalities`, with input dims from the feature store.

    Every design takes the same batch and returns (B, 6) in [0, 1]; `return_weights=True` adds
    the fusion weights where the design has them (ustc with quality/mean fusion), else None.
    """
    if cfg.arch not in _ARCHS:
        raise ConfigError(f"model.arch={cfg.arch!r}: choose {', '.join(_ARCHS)}")
    return _ARCHS[cfg.arch](cfg, dims)
