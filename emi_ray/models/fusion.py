"""Quality-Aware dynamic fusion and the Transformer regressor (paper §3.5, eq. 8–10)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from emi_ray.config import ModelConfig
from emi_ray.models.inputs import INIT_OUTPUT, N_OUTPUTS


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear → GELU → Dropout → Linear (the modality mapping layers of eq. 5)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


class QualityFusion(nn.Module):
    """Quality-Aware Module: q_m^t = MLP_m(x_m^t) (eq. 8), β^t = softmax_m over present
    modalities (eq. 9), fused^t = Σ_m β_m^t x_m^t (the input of eq. 10)."""

    def __init__(self, dim: int, n_modalities: int, dropout: float = 0.0):
        super().__init__()
        self.scorers = nn.ModuleList(
            mlp(dim, max(dim // 2, 1), 1, dropout) for _ in range(n_modalities)
        )

    def forward(self, tokens: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """tokens: (B, n, M, d); present: (B, n) bool. Returns fused (B, M, d), β (B, M, n)."""
        q = torch.cat([s(tokens[:, i]) for i, s in enumerate(self.scorers)], dim=-1)  # (B, M, n)
        absent = ~present.unsqueeze(1)  # (B, 1, n)
        none = ~present.any(1).view(-1, 1, 1)  # rows with nothing present: avoid softmax(-inf)
        q = q.masked_fill(absent & ~none, float("-inf")).masked_fill(none, 0.0)
        beta = torch.softmax(q, dim=-1) * present.unsqueeze(1).to(q.dtype)
        return torch.einsum("bmn,bnmd->bmd", beta, tokens), beta


def mean_weights(present: Tensor, segments: int) -> Tensor:
    """Uniform fusion weights over present modalities, (B, M, n)."""
    w = present.to(torch.get_default_dtype())
    w = w / w.sum(1, keepdim=True).clamp(min=1.0)
    return w.unsqueeze(1).expand(-1, segments, -1)


class FusionRegressor(nn.Module):
    """Fuse per-modality tokens (quality | mean | concat), run the Transformer encoder
    (eq. 10), masked-mean over tokens, LayerNorm + MLP head → 6 sigmoid intensities."""

    def __init__(self, cfg: ModelConfig, n_modalities: int):
        super().__init__()
        d, self.kind, self.segments = cfg.dim, cfg.fusion, cfg.segments
        self.quality = QualityFusion(d, n_modalities, cfg.dropout) if self.kind == "quality" else None
        self.modality_emb = (
            nn.Parameter(torch.randn(n_modalities, d) * 0.02) if self.kind == "concat" else None
        )
        self.pos_emb = nn.Parameter(torch.randn(cfg.segments, d) * 0.02)
        self.encoder: nn.Module | None = None
        if cfg.fusion_layers > 0:
            layer = nn.TransformerEncoderLayer(
                d, cfg.fusion_heads, dim_feedforward=2 * d, dropout=cfg.dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(
                layer, cfg.fusion_layers, enable_nested_tensor=False
            )
        self.norm = nn.LayerNorm(d)
        self.head = mlp(d, d, N_OUTPUTS, cfg.dropout)
        with torch.no_grad():
            self.head[-1].bias.fill_(math.log(INIT_OUTPUT / (1 - INIT_OUTPUT)))

    def forward(self, tokens: Tensor, present: Tensor,
                extra_logits: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """tokens: (B, n, M, d) (absent modalities zero); present: (B, n) bool; extra_logits
        (B, 6): added before the sigmoid (the linear path over pooled inputs).

        Returns predictions (B, 6) in [0, 1] and fusion weights (B, M, n) (None for concat).
        """
        B, n, M, d = tokens.shape
        pad: Tensor | None = None
        if self.kind == "concat":
            weights = None
            x = tokens + self.modality_emb.view(1, n, 1, d) + self.pos_emb.view(1, 1, M, d)
            x = x.reshape(B, n * M, d)
            valid = present | ~present.any(1, keepdim=True)  # never mask a whole row
            pad = ~valid.unsqueeze(-1).expand(B, n, M).reshape(B, n * M)
        else:
            if self.quality is not None:
                fused, weights = self.quality(tokens, present)
            else:
                weights = mean_weights(present, M).to(tokens.dtype)
                fused = torch.einsum("bmn,bnmd->bmd", weights, tokens)
            x = fused + self.pos_emb.unsqueeze(0)
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=pad)
        if pad is None:
            pooled = x.mean(1)
        else:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)  # where(), not *: padded outputs may be NaN
            pooled = x.sum(1) / (~pad).sum(1, keepdim=True).clamp(min=1).to(x.dtype)
        logits = self.head(self.norm(pooled))
        return torch.sigmoid(logits if extra_logits is None else logits + extra_logits), weights
