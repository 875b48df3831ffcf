"""Audio branch (paper §3.3–3.4): BiLSTM (eq. 4) with gated attention (eq. 7)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class GatedBiLSTM(nn.Module):
    """BiLSTM over packed sequences, then α_t = σ(W_g [h_t; h_t − h_{t−1}]), h̃_t = α_t ⊙ h_t.

    h_{−1} = h_0, so Δh = 0 at t = 0. `gate=False` returns plain h_t. Output dim 2·hidden;
    padded frames and absent rows (mask all False) come out as zeros. `layers` stacks BiLSTMs
    (with `dropout` between them too).
    """

    def __init__(self, in_dim: int, hidden: int, gate: bool = True, dropout: float = 0.0, layers: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.gate = nn.Linear(4 * hidden, 2 * hidden) if gate else None
        self.drop = nn.Dropout(dropout)
        self.out_dim = 2 * hidden

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, D) zero-padded; mask: (B, T) bool, True = real frame (a prefix)."""
        mask = mask.bool()
        lengths = mask.sum(1)
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        h, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])  # eq. 4
        pad = ~mask.unsqueeze(-1)
        h = h.masked_fill(pad, 0.0)  # absent rows (clamped to length 1) included
        if self.gate is not None:
            prev = torch.cat([h[:, :1], h[:, :-1]], dim=1)
            alpha = torch.sigmoid(self.gate(torch.cat([h, h - prev], dim=-1)))  # eq. 7
            h = alpha * h
        return self.drop(h).masked_fill(pad, 0.0)
