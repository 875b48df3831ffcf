"""Training and application of the stage-I heads at one granularity (`stage1.granularity`).

Stage II applies a head to every stored frame of a clip (wav2vec2: one per ~20 ms). What the
head saw in training must look like that, or its inputs come from another distribution (a
clip mean of 50 frames has a fraction of a single frame's spread, and the input
normalisation, fitted on one, mis-scales the other). Two ways, recorded in the run
(heads.pt["granularity"], ["windows"]) so that applying a head does what its training did:

  clip   the heads train on clip means (the CLAP-style clip embedding; the default, and
         what runs did before the switch existed). Applied to a (T, D) sequence, each frame
         is first replaced by the mean over a centred window of W frames, W = the median
         frame count of the training clips (`windows`, per head): the head again sees
         means over a clip's length of frames. Vision items are single images, W = 1.
  frame  the heads train on single frames: each epoch every item contributes one of its
         cached frames (drawn afresh per epoch, paired with the item's prompt); the input
         statistics are those of the training items' frames; held-out retrieval queries
         every cached frame. Applied frame by frame (W = 1).

A run saved before this switch records neither: it trained on clip means, and its window is
unknown, so it is applied frame by frame as it always was (`from_heads`: windows {}).
"""

from __future__ import annotations

import numpy as np

from emi_ray.align.input_stats import input_stats
from emi_ray.data.normalize import Normalization

GRANULARITIES = ("clip", "frame")
FRAMED = ("audio",)  # modalities whose items are sequences of frames (vision items: one image)


def window_mean(x: np.ndarray, w: int) -> np.ndarray:
    """(T, D) -> (T, D): each row the mean of the rows in a centred window of `w` (cut at the ends)."""
    x = np.asarray(x, np.float32)
    if w <= 1 or x.ndim != 2 or len(x) < 2:
        return x
    c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0, dtype=np.float64)])
    t = np.arange(len(x))
    lo, hi = np.maximum(t - w // 2, 0), np.minimum(t - w // 2 + w, len(x))
    return ((c[hi] - c[lo]) / (hi - lo)[:, None]).astype(np.float32)


def applied_inputs(x: np.ndarray, norm: Normalization | None, head: str, window: int = 1) -> np.ndarray:
    """What a head sees of raw store features (D,) or (T, D): the window mean (clip-trained
    heads), then the run's input normalisation, as in training."""
    x = window_mean(x, window) if np.ndim(x) == 2 else np.asarray(x, np.float32)
    return norm.apply(head, x) if norm is not None else x


def training_windows(data: dict[str, dict[str, np.ndarray]], granularity: str) -> dict[str, int]:
    """Per head, the window a run's heads are applied over: the median frame count of the
    training clips (clip granularity, framed modalities), else 1."""
    out = {}
    for m, a in data.items():
        counts = a.get("n_frames", a.get("lens")) if m in FRAMED else None
        train = ~np.asarray(a["valid"], bool)
        out[m] = int(np.median(counts[train])) if granularity == "clip" and counts is not None else 1
    return out


def from_heads(st: dict) -> tuple[str, dict[str, int]]:
    """(granularity, windows) of a run's heads.pt state; older runs: ("clip", {}) = per frame as before."""
    return st.get("granularity", "clip"), dict(st.get("windows") or {})


def frame_rows(offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One frame index per item (item i: a uniform draw from offsets[i]..offsets[i+1]-1)."""
    counts = np.diff(offsets)
    return offsets[:-1] + (rng.random(len(counts)) * counts).astype(np.int64)


def frames_of(offsets: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, position in `items` of each frame's item) for every cached frame of `items`."""
    spans = [np.arange(offsets[i], offsets[i + 1]) for i in items]
    pos = np.repeat(np.arange(len(items)), [len(s) for s in spans])
    return np.concatenate(spans).astype(np.int64), pos


def frame_statistics(data: dict[str, dict[str, np.ndarray]], norm: Normalization | None) -> Normalization | None:
    """`norm` with each modality's statistics refitted on its training items' frames
    (frame granularity: the heads see frames, so their inputs are standardised as frames)."""
    if norm is None:
        return None
    for m, a in data.items():
        train = np.flatnonzero(~np.asarray(a["valid"], bool))
        rows, _ = frames_of(a["offsets"], train)
        f = a["frames"][rows]
        sub = input_stats({m: {"x": f, "text": f, "valid": np.zeros(len(f), bool)}}, norm.mode)
        norm.mean[m], norm.scale[m], norm.constant[m] = sub.mean[m], sub.scale[m], sub.constant[m]
    return norm
