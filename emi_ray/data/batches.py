"""Collate dataset items into padded tensors with masks (the model's batch format).

Batch keys, per modality m: video/audio -> `m` (B, T, D) zero-padded, `m_mask` (B, T) bool
(True = real frame), `m_present` (B,) bool; text -> `text` (B, D), `text_present` (B,).
Plus `id` (B,) int64 and `labels` (B, 6) float (NaN where unknown).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emi_ray.data.store import SEQUENCE_MODALITIES


def collate(items: list[dict[str, Any]], dims: dict[str, int]) -> dict[str, torch.Tensor]:
    b = len(items)
    batch = {
        "id": torch.tensor([it["id"] for it in items], dtype=torch.int64),
        "labels": torch.from_numpy(np.stack([it["labels"] for it in items])),
    }
    for m, dim in dims.items():
        xs = [it.get(m) for it in items]
        present = torch.tensor([x is not None for x in xs])
        batch[f"{m}_present"] = present
        if m in SEQUENCE_MODALITIES:
            t = max([x.shape[0] for x in xs if x is not None], default=1)
            out = np.zeros((b, t, dim), np.float32)
            mask = np.zeros((b, t), bool)
            for i, x in enumerate(xs):
                if x is not None:
                    out[i, : x.shape[0]] = x
                    mask[i, : x.shape[0]] = True
            batch[m] = torch.from_numpy(out)
            batch[f"{m}_mask"] = torch.from_numpy(mask)
        else:
            out = np.zeros((b, dim), np.float32)
            for i, x in enumerate(xs):
                if x is not None:
                    out[i] = x
            batch[m] = torch.from_numpy(out)
    return batch


class Collator:
    """Picklable collate_fn for DataLoader workers."""

    def __init__(self, dims: dict[str, int]):
        self.dims = dict(dims)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(items, self.dims)
