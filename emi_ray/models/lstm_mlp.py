"""`model.arch=lstm_mlp`: the 8th ABAW winner's design (test 0.706), per-modality LSTMs and an MLP.

Per sequential modality (video, audio) a linear projection to `model.dim` and a BiLSTM over the
frames (`model.lstm_layers` deep, `model.lstm_hidden` per direction), summarised by its final
states and its mean over the real frames; the transcript vector as it is; the pieces
concatenated and regressed by an MLP (`model.dim` wide) to six sigmoid intensities. With `model.lstm_layers=0` each sequence is only time-averaged: a
concatenation of pooled features + MLP, the 10th ABAW runner-up's design (`concat_mlp`;
trained with train.loss=mse+pearson and EMA, both defaults here).

A modality a clip lacks (absent, or dropped by train.modality_dropout) is replaced by a learned
vector of that modality, so "no audio" is something the head can learn to read, not a zero that
looks like an average clip.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emi_ray.config import ModelConfig
from emi_ray.models.audio import GatedBiLSTM
from emi_ray.models.inputs import (
    check_modalities,
    linear_path,
    masked_mean,
    output_head,
    sequence_presence,
    text_presence,
)


def final_states(h: Tensor, mask: Tensor) -> Tensor:
    """(B, T, 2H) BiLSTM outputs -> (B, 2H): the forward half at the last real frame and the
    backward half at the first (each direction's summary of the whole clip; masks are prefixes)."""
    half = h.shape[-1] // 2
    last = (mask.sum(1) - 1).clamp(min=0)
    return torch.cat([h[torch.arange(h.shape[0], device=h.device), last, :half], h[:, 0, half:]], dim=-1)


class SequenceSummary(nn.Module):
    """(B, T, D) frames + mask -> (B, out_dim): Linear to model.dim -> BiLSTM -> [final states;
    mean over real frames] (the final states carry where in time things happened, which a mean
    dilutes). lstm_layers=0: the mean of the raw frames."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(in_dim, cfg.dim) if cfg.lstm_layers > 0 else None
        self.rnn = (GatedBiLSTM(cfg.dim, cfg.lstm_hidden, gate=False, dropout=cfg.dropout, layers=cfg.lstm_layers)
                    if cfg.lstm_layers > 0 else None)
        self.out_dim = 2 * self.rnn.out_dim if self.rnn is not None else in_dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.rnn is None:
            return masked_mean(x, mask)
        h = self.rnn(self.proj(x), mask)
        return torch.cat([final_states(h, mask), masked_mean(h, mask)], dim=-1)


class LstmMlpModel(nn.Module):
    """Predicts the six intensities (B, 6) in [0, 1]; no fusion weights (return_weights: None)."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.modalities = check_modalities(cfg, dims)
        self.summaries = nn.ModuleDict({m: SequenceSummary(int(dims[m]), cfg) for m in self.modalities
                                        if m != "text"})
        widths = {m: self.summaries[m].out_dim if m in self.summaries else int(dims[m]) for m in self.modalities}
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(w)) for m, w in widths.items()})
        self.head = output_head(sum(widths.values()), cfg.dim, cfg.dropout)
        self.linear = linear_path(cfg, dims)

    def summarise(self, batch: dict[str, Tensor], m: str) -> Tensor:
        """(B, width) of modality m: its summary where present, its learned missing vector where not."""
        if m == "text":
            present, vec = text_presence(batch), batch["text"]
        else:
            mask, present = sequence_presence(batch, m)
            vec = self.summaries[m](batch[m].masked_fill(~mask.unsqueeze(-1), 0.0), mask)
        return torch.where(present.unsqueeze(1), vec, self.missing[m].to(vec.dtype).expand_as(vec))

    def forward(self, batch: dict[str, Tensor], return_weights: bool = False) -> Tensor | tuple[Tensor, None]:
        logits = self.head(torch.cat([self.summarise(batch, m) for m in self.modalities], dim=1))
        if self.linear is not None:
            logits = logits + self.linear(batch)
        pred = torch.sigmoid(logits)
        return (pred, None) if return_weights else pred
