"""Frozen-encoder features of an affect corpus, computed once and cached as .npz.

Encoders are frozen in stage I (stage1.train_blocks=0), so a corpus is encoded once per
(encoder choice, manifest) and the heads train on the cached arrays:
vision: the video encoder on the single-frame clip -> (D_v,); audio: the audio encoder's
(T, D_a) frames mean-pooled over time -> (D_a,); text: the text encoder on the eq. (1)
prompt -> (D_t,).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.align.corpus import AffectCorpus, read_image
from emi_ray.errors import InputError

SHORT = {"lite": None, "clip": "clip", "wav2vec2": "wav2vec2", "hash": "hash", "bert": "bert"}
LITE = {"vision": "lite-video", "audio": "lite-audio", "text": "hash"}


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
        from emi_ray.extract.presets import load_models_file

        models = load_models_file(models_file)
        names = {"vision": LITE["vision"] if video == "lite" else video,
                 "audio": LITE["audio"] if audio == "lite" else audio,
                 "text": LITE["text"] if text == "lite" else text}
        return cls(**names, options={n: models.get(n, {}) for n in names.values()})

    def key(self) -> str:
        return hashlib.sha1(json.dumps([self.vision, self.audio, self.text, self.options],
                                       sort_keys=True).encode()).hexdigest()[:10]

    def create(self, modality: str):
        from emi_ray.extract.encoders import create_encoder, encoder_info

        name = getattr(self, modality)
        want = {"vision": "video", "audio": "audio", "text": "text"}[modality]
        if encoder_info(name).modality != want:
            raise InputError(f"encoder {name!r} is not a {want} encoder")
        return create_encoder(name, **self.options.get(name, {}))


def _encode_items(corpus: AffectCorpus, modality: str, items: list, enc: Any, batch: int = 32) -> np.ndarray:
    from emi_ray.extract.decode import decode_audio

    out = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        if modality == "vision":
            clips = [read_image(corpus.root / it.path)[None] for it in chunk]
            out += [f.mean(0) for f in enc.encode(clips)]
        else:
            waves = []
            for it in chunk:
                w = decode_audio(corpus.root / it.path, getattr(enc, "sample_rate", 16000))
                if w is None:
                    raise InputError(f"{corpus.root / it.path}: no audio stream")
                waves.append(w)
            out += [f.mean(0) for f in enc.encode(waves)]
    return np.stack(out).astype(np.float32)


def cache_path(corpus: AffectCorpus, modality: str, encoders: Encoders, cache_dir: Path | None = None) -> Path:
    """Where corpus_features caches one modality's arrays (keyed by affect.csv + encoders)."""
    manifest = (corpus.root / "affect.csv").read_bytes()
    key = hashlib.sha1(manifest + encoders.key().encode() + modality.encode()).hexdigest()[:16]
    return Path(cache_dir or corpus.root / ".features") / f"{modality}-{key}.npz"


def corpus_features(corpus: AffectCorpus, modality: str, encoders: Encoders, cache_dir: Path | None = None,
                    progress=None) -> dict[str, np.ndarray]:
    """{x, text, weight, valid, expr, prompt_id} of one modality's items (cached per corpus + encoders)."""
    items = corpus.of(modality)
    if not items:
        raise InputError(f"{corpus.root}: no {modality} rows in the affect corpus")
    path = cache_path(corpus, modality, encoders, cache_dir)
    cache_dir = path.parent
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if progress:
        progress(f"encoding {len(items)} {modality} items with {getattr(encoders, modality)} + {encoders.text} "
                 f"(once; cached in {path})")
    x = _encode_items(corpus, modality, items, encoders.create(modality))
    prompts = [it.prompt for it in items]
    text = np.asarray(encoders.create("text").encode(prompts), np.float32)
    uniq = {p: k for k, p in enumerate(dict.fromkeys(prompts))}
    exprs = sorted({it.expression for it in items})
    arrays = {
        "x": x, "text": text,
        "weight": np.array([it.weight for it in items], np.float32),
        "valid": np.array([it.split == "valid" for it in items]),
        "prompt_id": np.array([uniq[p] for p in prompts], np.int64),
        "expr": np.array([exprs.index(it.expression) for it in items], np.int64),
    }
    from emi_ray.io import atomic_path

    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return arrays
