"""`model.arch=text_anchor`: the 10th ABAW (CVPR 2026) winner's design (test 0.708).

The transcript anchors the model: its vector, projected and added to `model.anchor_queries`
learned query embeddings, gives the queries; each of `model.anchor_layers` blocks lets them
attend over the audio frames and over the video frames (one cross-attention per modality,
`model.fusion_heads` heads, key padding masks from the batch masks; pre-norm, residual, then a
feed-forward), and the mean of the queries is regressed to six sigmoid intensities.

Missing modalities use learnable tokens:
  * a clip without audio (or video) attends over that modality's learned "missing" token
    instead of its frames (the token is masked out where frames exist), so every attention has
    at least one key and the model can learn what an absence means;
  * a clip without a transcript gets the learned "missing text" vector in place of the projected
    transcript; with "text" not in model.modalities at all, every clip does, and the queries are
    purely learned: the design becomes attention pooling over the audio/video frames.
train.modality_dropout hides modalities in training (the winner's modality dropout), which is
what teaches these tokens. Frames carry no position embedding: attention reads them as a set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emi_ray.config import ModelConfig
from emi_ray.models.fusion import mlp
from emi_ray.models.inputs import (
    check_modalities,
    linear_path,
    output_head,
    sequence_presence,
    text_presence,
)


class AnchorBlock(nn.Module):
    """Queries += Σ_m CrossAttention_m(LN(queries), frames_m); queries += FFN(LN(queries))."""

    def __init__(self, dim: int, heads: int, sources: list[str], dropout: float):
        super().__init__()
        self.attn = nn.ModuleDict({m: nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
                                   for m in sources})
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = mlp(dim, 2 * dim, dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: Tensor, frames: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """q: (B, Q, d); frames: m -> (keys (B, T, d), ignore (B, T) bool: True = not a key)."""
        h = self.norm_q(q)
        for m, attn in self.attn.items():
            keys, ignore = frames[m]
            q = q + self.drop(attn(h, keys, keys, key_padding_mask=ignore, need_weights=False)[0])
        return q + self.drop(self.ff(self.norm_ff(q)))


class TextAnchorModel(nn.Module):
    """Predicts the six intensities (B, 6) in [0, 1]; no fusion weights (return_weights: None)."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.modalities = check_modalities(cfg, dims)
        d = cfg.dim
        self.sources = [m for m in self.modalities if m != "text"]
        self.text_proj = nn.Linear(int(dims["text"]), d) if "text" in self.modalities else None
        self.missing_text = nn.Parameter(torch.randn(d) * 0.02)
        self.queries = nn.Parameter(torch.randn(cfg.anchor_queries, d) * 0.02)
        self.frame_proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(int(dims[m]), d), nn.LayerNorm(d))
                                         for m in self.sources})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(1, d) * 0.02) for m in self.sources})
        self.blocks = nn.ModuleList(AnchorBlock(d, cfg.fusion_heads, self.sources, cfg.dropout)
                                    for _ in range(cfg.anchor_layers))
        self.head = output_head(d, d, cfg.dropout)
        self.linear = linear_path(cfg, dims)

    def anchor(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, Q, d) queries: the projected transcript (or the missing-text vector) + query embeddings."""
        ref = batch[self.sources[0]] if self.text_proj is None else batch["text"]
        missing = self.missing_text.to(ref.dtype).expand(ref.shape[0], -1)
        if self.text_proj is None:
            text = missing
        else:
            text = torch.where(text_presence(batch).unsqueeze(1), self.text_proj(batch["text"]), missing)
        return text.unsqueeze(1) + self.queries.to(text.dtype).unsqueeze(0)

    def keys(self, batch: dict[str, Tensor], m: str) -> tuple[Tensor, Tensor]:
        """[missing token; projected frames] (B, 1+T, d) and what to ignore: the token where the
        clip has frames, else everything but the token."""
        mask, present = sequence_presence(batch, m)
        frames = self.frame_proj[m](batch[m].masked_fill(~mask.unsqueeze(-1), 0.0))
        token = self.missing[m].to(frames.dtype).expand(frames.shape[0], 1, -1)
        real = torch.cat([~present.unsqueeze(1), mask], dim=1)
        return torch.cat([token, frames], dim=1), ~real

    def forward(self, batch: dict[str, Tensor], return_weights: bool = False) -> Tensor | tuple[Tensor, None]:
        q = self.anchor(batch)
        frames = {m: self.keys(batch, m) for m in self.sources}
        for block in self.blocks:
            q = block(q, frames)
        logits = self.head(q.mean(1))
        if self.linear is not None:
            logits = logits + self.linear(batch)
        pred = torch.sigmoid(logits)
        return (pred, None) if return_weights else pred
