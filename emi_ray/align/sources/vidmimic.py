"""Hume-Vidmimic2's own split CSVs + audio -> audio rows with prompts from the six intensities.

`train_split.csv` / `valid_split.csv` (header `Filename,Admiration,Amusement,Determination,
Empathic Pain,Excitement,Joy`, Filename an integer id) and `audio/<id:05d>.mp3`, read with the
dataset reader of `emi-ray extract` (same untrusted-folder rules). Each labelled clip becomes an
audio row whose prompt names its strongest emotions with their level, e.g. "Joy (Intensity:
High) and Amusement (Intensity: Low)" (at most `top` emotions at or above `min_intensity`;
none: "Neutral"); its expression is the strongest one. The clips have no valence/arousal, so
their rows carry the prompt and no VA, and their confidence weight is 1 (source "none").
A clip without a readable, decodable audio file is skipped and counted. Audio is copied to
OUT/audio/vidmimic/<id:05d>.mp3.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from emi_ray import EMOTIONS
from emi_ray.align.corpus import AffectItem, CorpusError
from emi_ray.align.prompts import intensity_level
from emi_ray.align.sources.inputs import Refused, read_source
from emi_ray.align.sources.writer import ConversionResult, Tally, claim_target, convert
from emi_ray.data.layout import Dataset, file_stem, read_layout
from emi_ray.errors import EmiError
from emi_ray.extract.decode import decode_audio
from emi_ray.io import atomic_write_bytes

FORMAT = "vidmimic"
PROBE_SECONDS = 0.5  # decoding this much proves the file is audio


def emotion_prompt(labels: np.ndarray, min_intensity: float = 0.1, top: int = 2) -> tuple[str, str | None, str]:
    """(expression, intensity level, prompt) of one clip's six intensities in [0, 1]."""
    ranked = sorted(zip(EMOTIONS, (float(v) for v in labels)), key=lambda e: -e[1])
    named = [(e, v) for e, v in ranked[:top] if v >= min_intensity and v > 0]
    if not named:
        return "Neutral", None, "Neutral"
    phrases = [f"{e} (Intensity: {intensity_level(v)})" for e, v in named]
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return named[0][0], intensity_level(named[0][1]), text


def _clip_maker(ds: Dataset, out: Path, min_intensity: float, top: int):
    def make(vid: int) -> AffectItem:
        rel = f"audio/{FORMAT}/{file_stem(vid)}.mp3"
        if not (out / rel).is_file():  # made by an earlier run: resume
            src = ds.path("audio", vid)
            if src is None:
                refused = ds.problems_of(vid, ("audio",))
                if refused:
                    raise Refused("refused audio file", refused[0].message)
                raise Refused("missing audio", f"{ds.root / 'audio' / (file_stem(vid) + '.mp3')}: not found")
            data = read_source(src, ds.root, ds.max_file_bytes)
            try:
                if decode_audio(src, max_seconds=PROBE_SECONDS) is None:
                    raise Refused("undecodable audio", f"{src}: no audio stream")
            except EmiError as e:
                raise Refused("undecodable audio", str(e)) from None
            atomic_write_bytes(out / rel, data)
        expr, level, prompt = emotion_prompt(ds.labels[vid], min_intensity, top)
        return AffectItem(rel, "audio", expr, level, [], None, None, ds.split_of[vid], prompt_text=prompt)
    return make


def convert_vidmimic(data: str | Path, out: str | Path, min_intensity: float = 0.1, top: int = 2,
                     force: bool = False, max_file_mb: float | None = None, workers: int = 4,
                     progress=None) -> ConversionResult:
    """The labelled (train + valid) clips of the Hume-Vidmimic2 folder `data` -> audio rows in OUT."""
    data, out = Path(data), Path(out)
    if not 0.0 <= min_intensity <= 1.0:
        raise CorpusError(f"--min-intensity {min_intensity}: must lie in [0, 1]")
    if top < 1:
        raise CorpusError(f"--top {top}: must be >= 1")
    with warnings.catch_warnings():  # ids without files are counted below, not warned about
        warnings.simplefilter("ignore")
        ds = read_layout(data, max_file_mb)
    ids = ds.ids("train") + ds.ids("valid")
    claim_target(out, [data], force)
    return convert(out, FORMAT, data, ids, _clip_maker(ds, out, min_intensity, top), Tally(),
                   {"min_intensity": min_intensity, "top": top}, workers, progress)
