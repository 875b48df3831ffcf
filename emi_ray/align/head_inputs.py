"""The stage-I heads' inputs during training, and held-out retrieval on them.

`Inputs` serves rows of one modality's arrays (features.corpus_features / tail_features):
cached frozen features normalised by the run's statistics, or the trainable tails run on
the cached prefix states. With `stage1.granularity=frame` (granularity.py) a modality's
row `x` is one of the item's cached frames, drawn afresh each epoch (`draw`), and held-out
retrieval queries every cached frame of the held-out items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emi_ray.align.granularity import frame_rows, frames_of
from emi_ray.data.normalize import Normalization
from emi_ray.errors import EmiError
from emi_ray.models.align_heads import AlignHeads


class Inputs:
    """The heads' inputs for rows of one modality's arrays: cached frozen features (normalised
    by `norm`, keyed by head name, when given), or the trainable tails run on the cached
    prefix states (padding cut to the rows' longest)."""

    def __init__(self, data: dict[str, dict[str, np.ndarray]], tails: dict[str, Any] | None,
                 norm: Normalization | None = None, granularity: str = "clip"):
        self.tails = tails or {}
        if self.tails and norm is not None:
            raise EmiError("stage I: input normalisation applies to frozen features, not to backbone tails")
        if self.tails and granularity != "clip":
            raise EmiError("stage1.granularity=frame trains on frozen frames; with stage1.train_blocks > 0 "
                           "use stage1.granularity=clip")
        keys = ("states", "lens", "text_states", "text_lens") if self.tails else ("x", "text")

        def column(m: str, k: str) -> torch.Tensor:
            a = data[m][k]
            if norm is not None and k in ("x", "text", "frames"):
                a = norm.apply(m if k != "text" else "text", np.asarray(a, np.float32))
            return torch.from_numpy(np.ascontiguousarray(a))

        self.t = {m: {k: column(m, k) for k in (*keys, "weight")} for m in data}
        self.offsets: dict[str, np.ndarray] = {}  # frame granularity: each modality's frame spans
        if granularity == "frame":
            for m in data:
                if "frames" not in data[m]:
                    raise EmiError(f"stage1.granularity=frame: the {m} features hold no frames (a cache "
                                   "written before frames were kept); delete CORPUS/.features and re-run")
                self.t[m]["frames"] = column(m, "frames")
                self.offsets[m] = np.asarray(data[m]["offsets"], np.int64)

    def draw(self, rng: np.random.Generator) -> None:
        """Frame granularity: each item's row `x` becomes one of its frames (a new draw per call)."""
        for m, off in self.offsets.items():
            self.t[m]["x"] = self.t[m]["frames"][torch.from_numpy(frame_rows(off, rng))]

    def __call__(self, modality: str, side: str, rows: torch.Tensor) -> torch.Tensor:
        d = self.t[modality]
        if not self.tails:
            return d["x" if side == modality else "text"][rows]
        pre = "" if side == modality else "text_"
        lens = d[f"{pre}lens"][rows]
        return self.tails[side](d[f"{pre}states"][rows, : int(lens.max())], lens)

    def width(self, modality: str, side: str) -> int:
        if self.tails:
            return self.tails[side].dim
        return int(self.t[modality]["x" if side == modality else "text"].shape[1])

    def embed(self, heads: AlignHeads, modality: str, side: str, idx: np.ndarray, batch: int = 256) -> torch.Tensor:
        rows = torch.from_numpy(idx)
        return torch.cat([heads.embed(side, self(modality, side, rows[i : i + batch]))
                          for i in range(0, len(rows), batch)])

    def queries(self, heads: AlignHeads, modality: str, idx: np.ndarray, batch: int = 256):
        """(embeddings, position in `idx` of each one's item): the items `idx` (clip granularity)
        or every cached frame of them (frame granularity)."""
        if modality not in self.offsets:
            return self.embed(heads, modality, modality, idx, batch), np.arange(len(idx))
        rows, pos = frames_of(self.offsets[modality], idx)
        f = self.t[modality]["frames"]
        emb = torch.cat([heads.embed(modality, f[torch.from_numpy(rows[i : i + batch])])
                         for i in range(0, len(rows), batch)])
        return emb, pos

    def train(self, mode: bool) -> None:
        for t in self.tails.values():
            t.train(mode)


@torch.no_grad()
def retrieval(heads: AlignHeads, modality: str, arrays: dict[str, np.ndarray],
              inputs: Inputs | None = None, norm: Normalization | None = None) -> dict[str, float]:
    """Held-out modality->text recall@1/@5 over the held-out items' (unique) prompts
    (raw `arrays` normalised by the run's `norm`, unless `inputs` already are its inputs)."""
    v = arrays["valid"]
    if v.sum() < 2:
        return {}
    inputs = inputs or Inputs({modality: arrays}, None, norm)
    heads.eval()
    inputs.train(False)
    idx = np.flatnonzero(v)
    m, pos = inputs.queries(heads, modality, idx)
    pid = arrays["prompt_id"][v]
    uniq, first = np.unique(pid, return_index=True)
    t = inputs.embed(heads, modality, "text", idx[first])
    rank = (m @ t.T).argsort(dim=1, descending=True).numpy()
    hits = rank == np.searchsorted(uniq, pid[pos])[:, None]
    expr = arrays["expr"][v]
    top_expr = expr[first][rank[:, 0]]
    heads.train()
    inputs.train(True)
    return {f"{modality}_r1": float(hits[:, :1].any(1).mean()), f"{modality}_r5": float(hits[:, :5].any(1).mean()),
            f"{modality}_chance_r1": 1.0 / len(uniq), f"{modality}_expr_acc": float((top_expr == expr[pos]).mean())}
