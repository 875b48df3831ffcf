"""A synthetic affect corpus drawn by the synthetic face/voice generator (`synth_media`).

Per item: an expression (AffectNet's eight classes), an intensity level, the expression's
typical FACS AUs (one may be dropped or one added), valence/arousal near the
expression's centre, and 3-6 raters' VA around them. The annotation drives the face and
the voice through the six generator channels (ADM, AMU, DET, PAIN, EXC, JOY), e.g.
AU12 lifts the mouth corners (smile), AU15 lowers them, AU5 widens the eyes, AU4 lowers
the brows, AU26 opens the mouth, AU6 warms the skin; intensity scales all of it;
positive valence adds a smile, negative a frown; arousal raises the voice's pitch.

A fraction `noisy` of items is mislabelled (the media show another annotation than the
CSV says) and its raters disagree (VA std ~0.35): the confidence weight of eq. (2) is
what can tell them apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emi_ray.align.corpus import AffectItem, write_manifest, write_png, write_wav
from emi_ray.data.synth import ClipSpec
from emi_ray.data.synth_media import render_audio, render_frames

ADM, AMU, DET, PAIN, EXC, JOY = range(6)
PROFILES = {  # expression: (typical AUs, valence centre, arousal centre)
    "Neutral": ((), 0.0, 0.0),
    "Happy": ((6, 12), 0.75, 0.45),
    "Sad": ((1, 4, 15), -0.65, -0.35),
    "Surprise": ((1, 2, 5, 26), 0.2, 0.75),
    "Fear": ((1, 2, 4, 5, 20), -0.6, 0.7),
    "Disgust": ((9, 10, 15), -0.65, 0.3),
    "Anger": ((4, 5, 7, 23), -0.6, 0.65),
    "Contempt": ((12, 14), -0.4, 0.15),
}
AU_EFFECT = {  # AU -> {channel: amount}
    1: {PAIN: 0.3}, 2: {EXC: 0.3}, 4: {DET: 0.6}, 5: {EXC: 0.5}, 6: {ADM: 0.7},
    7: {DET: 0.4}, 9: {PAIN: 0.3, DET: 0.3}, 10: {PAIN: 0.3}, 12: {JOY: 0.8}, 14: {AMU: 0.4},
    15: {PAIN: 0.6}, 20: {PAIN: 0.3, EXC: 0.2}, 23: {DET: 0.4}, 26: {AMU: 0.6},
}
LEVEL_SCALE = {"Low": 0.4, "Medium": 0.7, "High": 1.0}
EXTRA_AUS = (1, 2, 4, 5, 6, 7, 12, 15, 26)


def _draw_annotation(rng: np.random.Generator) -> tuple[str, str, list[int], float, float]:
    expr = str(rng.choice(list(PROFILES)))
    aus, v0, a0 = PROFILES[expr]
    level = "Low" if expr == "Neutral" else str(rng.choice(list(LEVEL_SCALE)))
    aus = list(aus)
    if aus and rng.random() < 0.3:
        aus.pop(int(rng.integers(len(aus))))
    if expr != "Neutral" and rng.random() < 0.3:
        aus.append(int(rng.choice(EXTRA_AUS)))
    s = LEVEL_SCALE[level]
    val = float(np.clip(v0 * (0.5 + 0.5 * s) + rng.normal(0, 0.1), -1, 1))
    aro = float(np.clip(a0 * (0.5 + 0.5 * s) + rng.normal(0, 0.1), -1, 1))
    return expr, level, sorted(set(aus)), round(val, 2), round(aro, 2)


def channels(level: str, aus: list[int], valence: float, arousal: float) -> np.ndarray:
    """The six generator channels in [0, 1] that draw this annotation."""
    y = np.zeros(6)
    for au in aus:
        for ch, amt in AU_EFFECT.get(au, {}).items():
            y[ch] += amt
    y *= LEVEL_SCALE.get(level, 0.7)
    y[JOY] += 0.35 * max(valence, 0.0)
    y[PAIN] += 0.35 * max(-valence, 0.0)
    y[EXC] += 0.3 * max(arousal, 0.0)
    y[DET] += 0.2 * max(arousal, 0.0) * (valence < 0)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def write_affect_corpus(out: str | Path, n: int = 400, seed: int = 0, modalities: tuple[str, ...] = ("vision", "audio"),
                        noisy: float = 0.15, size: int = 64, audio_seconds: float = 1.0,
                        valid_fraction: float = 0.25) -> list[AffectItem]:
    """Write `n` annotated items per modality (images/*.png, audio/*.wav) + affect.csv under `out`."""
    out = Path(out)
    rng = np.random.default_rng([seed, 0xAFFEC7])
    items = []
    for k in range(n):
        ann = _draw_annotation(rng)
        shown = _draw_annotation(rng) if rng.random() < noisy else ann
        sd = 0.35 if shown is not ann else float(rng.uniform(0.02, 0.08))
        raters = int(rng.integers(3, 7))
        rv = np.clip(ann[3] + rng.normal(0, sd, raters), -1, 1)
        ra = np.clip(ann[4] + rng.normal(0, sd, raters), -1, 1)
        split = "valid" if k >= n * (1 - valid_fraction) else "train"
        y = channels(shown[1], shown[2], shown[3], shown[4])
        for mod in modalities:
            spec = ClipSpec(vid=k, split=split, labels=y, duration=1.0 if mod == "vision" else audio_seconds,
                            onset=0.0, offset=1.0, corrupt=None, seed=int(seed * 1_000_003 + k * 2 + (mod == "audio")))
            if mod == "vision":
                rel = f"images/{k:05d}.png"
                if not (out / rel).exists():
                    write_png(out / rel, render_frames(spec, size=size, fps=1)[0])
            else:
                rel = f"audio/{k:05d}.wav"
                if not (out / rel).exists():
                    write_wav(out / rel, render_audio(spec, 16000), 16000)
            items.append(AffectItem(rel, mod, ann[0], ann[1], ann[2], ann[3], ann[4], split,
                                    [float(v) for v in rv], [float(a) for a in ra]))
    write_manifest(out, items, raters=6)
    return items
