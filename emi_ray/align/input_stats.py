"""Stage-I input normalisation: per head and dimension statistics of the training items only.

Real encoder features (CLIP, wav2vec2) have non-zero means and a few dimensions 10-100x
larger than the rest; the heads' per-sample LayerNorm does not undo that (the loud
dimensions still dominate each item's mean and variance). Frozen-feature stage-I runs
(stage1.train_blocks = 0) therefore standardise each head's input, as stage II does
(emi_ray/data/normalize.py, same modes and constants, `data.normalize`):

  zscore  (x - mean) / std                                  over the training items
  robust  (x - median) / (IQR / 1.349), clipped to +-5      (IQR 0: the std instead)
  none    raw features

The statistics come from the corpus items outside the held-out part (`~valid`), one per
item: "vision" from the vision items' `x`, "audio" from the audio items' `x`, "text" from
the prompts' text features of all trained modalities' training items (one shared text
head). A constant dimension keeps scale 1 (it is only centred). The result is an
`emi_ray.data.normalize.Normalization` keyed by head name; its `to_state()` is saved in
the run (heads.pt["input_normalization"]) and `apply_heads` applies it to a store's raw
features before the heads.
"""

from __future__ import annotations

import numpy as np

from emi_ray.data.normalize import IQR_TO_STD, MODES, ROBUST_CLIP, ROBUST_ROWS, Normalization
from emi_ray.errors import EmiError

STATE_KEY = "input_normalization"  # in the stage-I checkpoints and heads.pt (None: inputs raw)


def _column_stats(x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(shift, scale, #constant dims) of the (N, D) rows `x`."""
    x = x.astype(np.float64)
    mean = x.mean(0)
    std = np.sqrt(np.maximum((x * x).mean(0) - mean**2, 0.0))
    if mode == "zscore":
        shift, scale = mean, std
    else:
        rows = x if len(x) <= ROBUST_ROWS else x[(np.arange(ROBUST_ROWS) * len(x)) // ROBUST_ROWS]
        q25, shift, q75 = np.quantile(rows, [0.25, 0.5, 0.75], axis=0)
        scale = (q75 - q25) / IQR_TO_STD
        scale = np.where(scale > 0, scale, std)  # a dimension mostly at one value: fall back to std
    const = scale <= 1e-6 * np.maximum(1.0, np.abs(shift))
    return shift.astype(np.float32), np.where(const, 1.0, scale).astype(np.float32), int(const.sum())


def input_stats(data: dict[str, dict[str, np.ndarray]], mode: str = "zscore") -> Normalization | None:
    """The heads' input statistics from `data` = {vision|audio: {x, text, valid, ...}} (the
    arrays of features.corpus_features) over each modality's training items (`~valid`);
    None for mode 'none'."""
    if mode not in MODES:
        raise EmiError(f"data.normalize={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return None
    train = {m: ~np.asarray(a["valid"], bool) for m, a in data.items()}
    for m, keep in train.items():
        if not keep.any():
            raise EmiError(f"stage I: no {m} training items to compute input normalisation statistics from")
    cols = {m: a["x"][train[m]] for m, a in data.items()}
    cols["text"] = np.concatenate([a["text"][train[m]] for m, a in data.items()])
    norm = Normalization(mode=mode, mean={}, scale={}, clip=ROBUST_CLIP if mode == "robust" else None,
                         clips=int(max(k.sum() for k in train.values())))
    for m, x in cols.items():
        norm.mean[m], norm.scale[m], norm.constant[m] = _column_stats(x, mode)
    return norm


def from_state(state: dict | None) -> Normalization | None:
    """A run's saved statistics (None: a run that normalised nothing, or one saved before runs did)."""
    return Normalization.from_state(state) if state else None
