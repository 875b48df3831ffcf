"""Encoder features of an affect corpus, computed once and cached as .npz.

Frozen encoders (stage1.train_blocks=0): a corpus is encoded once per (encoder choice,
manifest) and the heads train on the cached arrays: vision: the video encoder on the
single-frame clip -> (D_v,); audio: the audio encoder's (T, D_a) frames mean-pooled over
time -> (D_a,); text: the text encoder on the eq. (1) prompt -> (D_t,). Beside the clip
means (`x`) the cache keeps each item's frames for `stage1.granularity=frame`: up to
MAX_FRAMES evenly spaced frames per item, concatenated in `frames` with `offsets` (item i:
frames[offsets[i]:offsets[i+1]]), and `n_frames`, the item's full frame count (the length
of the window a clip-trained head is applied over; align/granularity.py).

Fine-tuned last N blocks (train_blocks=N > 0, `tail_features`): what is cached is the
output of the frozen prefix, the input of block L-N: per item a hidden-state sequence
(image tokens, audio frames, prompt tokens), zero-padded, with its length. Training runs
the tails (backbones.Tail) on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.align.backbones import Tail, capture_prefix, check_backbone, pad
from emi_ray.align.corpus import AffectCorpus, read_image
from emi_ray.errors import InputError
from emi_ray.extract.decode import decode_audio
from emi_ray.extract.encoders import create_encoder, encoder_info
from emi_ray.extract.presets import load_models_file
from emi_ray.io import atomic_path

SHORT = {"lite": None, "clip": "clip", "wav2vec2": "wav2vec2", "hash": "hash", "bert": "bert"}
LITE = {"vision": "lite-video", "audio": "lite-audio", "text": "hash"}
MAX_FRAMES = 16  # frames kept per item for frame-granularity training (bounds the cache: ~64 KB/item at D=1024)
CACHE_FORMAT = "frames1"  # in the cache key: caches from before frames were kept are re-encoded once


@dataclass
class Encoders:
    """Which frozen encoder per modality (registry names) and their options (path, ...)."""

    vision: str = "lite-video"
    audio: str = "lite-audio"
    text: str = "hash"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def choose(cls, video: str = "lite", audio: str = "lite", text: str = "hash",
               models_file: str | Path | None = None) -> Encoders:
        models = load_models_file(models_file)
        names = {"vision": LITE["vision"] if video == "lite" else video,
                 "audio": LITE["audio"] if audio == "lite" else audio,
                 "text": LITE["text"] if text == "lite" else text}
        return cls(**names, options={n: models.get(n, {}) for n in names.values()})

    def key(self) -> str:
        return hashlib.sha1(json.dumps([self.vision, self.audio, self.text, self.options],
                                       sort_keys=True).encode()).hexdigest()[:10]

    def create(self, modality: str):
        name = getattr(self, modality)
        want = {"vision": "video", "audio": "audio", "text": "text"}[modality]
        if encoder_info(name).modality != want:
            raise InputError(f"encoder {name!r} is not a {want} encoder")
        return create_encoder(name, **self.options.get(name, {}))


def _batches(corpus: AffectCorpus, modality: str, items: list, sample_rate: int = 16000, batch: int = 32):
    """The encoder inputs of `items`, a batch at a time: single-frame clips or waveforms."""
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        if modality == "vision":
            yield [read_image(corpus.root / it.path)[None] for it in chunk]
            continue
        waves = []
        for it in chunk:
            w = decode_audio(corpus.root / it.path, sample_rate)
            if w is None:
                raise InputError(f"{corpus.root / it.path}: no audio stream")
            waves.append(w)
        yield waves


def kept_frames(f: np.ndarray, most: int = MAX_FRAMES) -> np.ndarray:
    """At most `most` evenly spaced rows of the (T, D) frames `f` (all of them when T <= most)."""
    if len(f) <= most:
        return f
    return f[(np.arange(most) * len(f)) // most]


def _encode_items(corpus: AffectCorpus, modality: str, items: list, enc: Any, batch: int = 32) -> dict[str, np.ndarray]:
    """{x: clip means, frames, offsets, n_frames} of `items` through the frozen encoder `enc`."""
    means, kept, counts = [], [], []
    for inputs in _batches(corpus, modality, items, getattr(enc, "sample_rate", 16000), batch):
        for f in enc.encode(inputs):
            means.append(f.mean(0))
            kept.append(kept_frames(f))
            counts.append(len(f))
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in kept])]).astype(np.int64)
    return {"x": np.stack(means).astype(np.float32), "frames": np.concatenate(kept).astype(np.float32),
            "offsets": offsets, "n_frames": np.asarray(counts, np.int64)}


def _meta(items: list) -> dict[str, np.ndarray]:
    """weight, valid, prompt_id (per distinct prompt), expr of the items."""
    prompts = [it.prompt for it in items]
    uniq = {p: k for k, p in enumerate(dict.fromkeys(prompts))}
    exprs = sorted({it.expression for it in items})
    return {"weight": np.array([it.weight for it in items], np.float32),
            "valid": np.array([it.split == "valid" for it in items]),
            "prompt_id": np.array([uniq[p] for p in prompts], np.int64),
            "expr": np.array([exprs.index(it.expression) for it in items], np.int64)}


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def cache_path(corpus: AffectCorpus, modality: str, encoders: Encoders, cache_dir: Path | None = None,
               blocks: int = 0) -> Path:
    """Where corpus_features (blocks=0) or tail_features caches one modality's arrays
    (keyed by affect.csv + encoders [+ the number of fine-tuned blocks])."""
    manifest = (corpus.root / "affect.csv").read_bytes()
    tag = f"{modality}-tail{blocks}" if blocks else modality
    fmt = b"" if blocks else CACHE_FORMAT.encode()
    key = hashlib.sha1(manifest + encoders.key().encode() + tag.encode() + fmt).hexdigest()[:16]
    return Path(cache_dir or corpus.root / ".features") / f"{tag}-{key}.npz"


def _items(corpus: AffectCorpus, modality: str) -> list:
    items = corpus.of(modality)
    if not items:
        raise InputError(f"{corpus.root}: no {modality} rows in the affect corpus")
    return items


def corpus_features(corpus: AffectCorpus, modality: str, encoders: Encoders, cache_dir: Path | None = None,
                    progress=None) -> dict[str, np.ndarray]:
    """{x, frames, offsets, n_frames, text, weight, valid, expr, prompt_id} of one modality's items
    (cached per corpus + encoders)."""
    items = _items(corpus, modality)
    path = cache_path(corpus, modality, encoders, cache_dir)
    if path.is_file():
        return _load(path)
    if progress:
        progress(f"encoding {len(items)} {modality} items with {getattr(encoders, modality)} + {encoders.text} "
                 f"(once; cached in {path})")
    encoded = _encode_items(corpus, modality, items, encoders.create(modality))
    text = np.asarray(encoders.create("text").encode([it.prompt for it in items]), np.float32)
    arrays = {**encoded, "text": text, **_meta(items)}
    _save(path, arrays)
    return arrays


def tail_features(corpus: AffectCorpus, modality: str, encoders: Encoders, blocks: int,
                  cache_dir: Path | None = None, progress=None) -> dict[str, np.ndarray]:
    """{states, lens, text_states, text_lens, weight, valid, expr, prompt_id}: per item the
    input of block L-`blocks` of the modality's and of the text backbone (cached)."""
    for m in (modality, "text"):
        check_backbone(getattr(encoders, m), blocks)
    items = _items(corpus, modality)
    path = cache_path(corpus, modality, encoders, cache_dir, blocks)
    if path.is_file():
        return _load(path)
    if progress:
        progress(f"encoding {len(items)} {modality} items up to the last {blocks} blocks of "
                 f"{getattr(encoders, modality)} + {encoders.text} (once; cached in {path})")
    enc = encoders.create(modality)
    states, lens = pad(capture_prefix(enc, Tail(enc, blocks),
                                      _batches(corpus, modality, items, getattr(enc, "sample_rate", 16000))))
    enc = encoders.create("text")
    prompts = [it.prompt for it in items]
    text_states, text_lens = pad(capture_prefix(enc, Tail(enc, blocks),
                                                (prompts[i : i + 64] for i in range(0, len(prompts), 64))))
    arrays = {"states": states, "lens": lens, "text_states": text_states, "text_lens": text_lens, **_meta(items)}
    _save(path, arrays)
    return arrays
