"""Encoder registry: one small interface for every feature encoder.

An encoder is built by `create_encoder(name, path=..., device=..., **options)`, which loads
its weights from a local path (no hub at run time; weight-free encoders need none), and has

* `name` (registry name), `modality` (video | audio | text | transcript), `dim` (output
  width; None for a transcriber), `rate_hz` (audio: feature frames per second);
* `encode(batch)`: video: a list of uint8 (T, H, W, 3) RGB clips -> a list of (T, dim);
  audio: a list of float32 16 kHz mono waveforms -> a list of (T', dim); text: a list
  of strings -> (B, dim); transcript: a list of waveforms -> a list of strings;
* video encoders also say `input_size` (the square size frames are decoded at), audio
  ones `sample_rate`.

`encoder_info(name)` gives what an encoder needs (`path`: "file" | "dir" | None, and a
description) and `probe_dim(name, path, **options)` its output width from the config
alone, without loading weights: the pipeline checks paths and writes the store manifest
before any model is loaded.

| name       | modality   | weights from                                | dim                  |
|------------|------------|---------------------------------------------|----------------------|
| clip       | video      | open_clip ViT-B-16 checkpoint file (or dir) | 768 (512 projected)  |
| wav2vec2   | audio      | transformers Wav2Vec2Model directory        | hidden size, ~50 Hz  |
| bert       | text       | transformers BERT-style model directory     | hidden size          |
| whisper    | transcript | faster-whisper (CTranslate2) model dir      | - (text)             |
| lite-video | video      | none: 16x16 RGB pixels + seeded projection  | 256                  |
| lite-audio | audio      | none: log-mel mean/std per 0.1 s            | 128, 10 Hz           |
| hash       | text       | none: hashed words and bigrams              | 256                  |
"""

from __future__ import annotations

import importlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emi_ray.errors import InputError
from emi_ray.extract.checkpoints import require_dir

_WORD = re.compile(r"[a-z0-9']+")


class HashingTextEncoder:
    """Deterministic bag of words and bigrams hashed into `dim` signed buckets, L2-normalised.

    Needs no weights and is the same on every machine (crc32, not Python's salted hash).
    """

    name = "hash"
    modality = "text"
    rate_hz = None

    def __init__(self, dim: int = 256, **_: Any):
        self.dim = dim

    @staticmethod
    def probe_dim(path: str | Path | None = None, dim: int = 256, **_: Any) -> int:
        return int(dim)

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        words = _WORD.findall(text.lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        for g in grams:
            h = zlib.crc32(g.encode())
            v[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


class BertTextEncoder:
    """A BERT-architecture encoder from a local directory (transformers), [CLS] or mean pooling."""

    name = "bert"
    modality = "text"
    rate_hz = None

    def __init__(self, path: str | Path | None = None, pooling: str = "mean", device: str = "cpu",
                 max_tokens: int = 128, tail: str | Path | None = None, **_: Any):
        self.path = require_dir(path, "bert", "a BERT/sentence-encoder model directory (config.json + weights)")
        import torch  # lazy: heavy; only model encoders need torch and transformers
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(device).eval()
        load_tail(self.model, tail, self.name)
        self.device, self.pooling, self.max_tokens = device, pooling, max_tokens
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
            h = self.model(**tok).last_hidden_state
        if self.pooling == "cls":
            out = h[:, 0]
        else:
            m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
            out = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return out.float().cpu().numpy()

    @staticmethod
    def probe_dim(path: str | Path | None = None, **_: Any) -> int:
        return config_int(path, "bert", "hidden_size", "a BERT/sentence-encoder model directory")


def load_tail(model: Any, tail: str | Path | None, encoder: str) -> None:
    """Load a stage-I run's fine-tuned tail weights (RUN/tails/<modality>.pt, `tail=` option of
    clip / wav2vec2 / bert) over `model`'s own; None leaves the model as loaded."""
    if tail is None:
        return
    import torch  # lazy: heavy; only model encoders load tails

    try:
        rec = torch.load(tail, map_location="cpu", weights_only=True)
        state = rec["state"]
    except Exception as e:  # missing, damaged, not a tail file
        raise InputError(f"{tail}: not a stage-I tail file ({type(e).__name__}: {str(e)[:120]})") from None
    own = model.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if rec.get("encoder") != encoder or bad:
        raise InputError(f"{tail}: fine-tuned {rec.get('encoder')} blocks do not fit this {encoder} model "
                         f"({bad[:3] or 'another encoder'}); extract with the model the stage-I run was trained on")
    model.load_state_dict(state, strict=False)


def config_int(path: str | Path | None, encoder: str, key: str, what: str) -> int:
    """An integer field of `path/config.json` (a transformers model directory)."""
    cfg = require_dir(path, encoder, what) / "config.json"
    try:
        return int(json.loads(cfg.read_text())[key])
    except FileNotFoundError:
        raise InputError(f"encoder {encoder!r}: {cfg} not found ({what})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"encoder {encoder!r}: {cfg} has no usable {key!r} ({e})") from None


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    modality: str  # video | audio | text | transcript
    path: str | None  # "file" | "dir" | None (weight-free)
    what: str  # what the local path must hold
    target: str  # "module:Class"

    def load_class(self) -> Any:
        module, cls = self.target.split(":")  # imported on first use: the registry itself stays light
        return getattr(importlib.import_module(module), cls)


INFO: dict[str, EncoderInfo] = {
    i.name: i
    for i in [
        EncoderInfo("clip", "video", "file",
                    "an open_clip ViT-B-16 checkpoint (.bin/.pt/.safetensors state dict, or a directory "
                    "with open_clip_config.json)", "emi_ray.extract.video_encoders:ClipImageEncoder"),
        EncoderInfo("wav2vec2", "audio", "dir", "a transformers Wav2Vec2 model directory (config.json + weights)",
                    "emi_ray.extract.audio_encoders:Wav2Vec2Encoder"),
        EncoderInfo("bert", "text", "dir", "a BERT/sentence-encoder model directory (config.json + weights)",
                    "emi_ray.extract.encoders:BertTextEncoder"),
        EncoderInfo("whisper", "transcript", "dir",
                    "a faster-whisper (CTranslate2) model directory (model.bin, config.json, tokenizer.json)",
                    "emi_ray.extract.whisper:WhisperTranscriber"),
        EncoderInfo("hash", "text", None, "", "emi_ray.extract.encoders:HashingTextEncoder"),
        EncoderInfo("lite-video", "video", None, "", "emi_ray.extract.video_encoders:LiteVideoEncoder"),
        EncoderInfo("lite-audio", "audio", None, "", "emi_ray.extract.audio_encoders:LiteAudioEncoder"),
    ]
}


def _lazy(info: EncoderInfo) -> Callable[..., Any]:
    def factory(**kwargs: Any) -> Any:
        return info.load_class()(**kwargs)

    factory.__name__ = info.name
    return factory


REGISTRY: dict[str, Callable[..., Any]] = {
    "hash": HashingTextEncoder,
    "bert": BertTextEncoder,
    **{n: _lazy(i) for n, i in INFO.items() if n not in ("hash", "bert")},
}


def register(name: str, factory: Callable[..., Any], info: EncoderInfo | None = None) -> None:
    REGISTRY[name] = factory
    if info is not None:
        INFO[name] = info


def encoder_info(name: str) -> EncoderInfo:
    if name not in INFO:
        raise InputError(f"unknown encoder {name!r}; available: {', '.join(sorted(INFO))}")
    return INFO[name]


def probe_dim(name: str, path: str | Path | None = None, **options: Any) -> int | None:
    """Output width of an encoder from its config alone (no weights loaded); None for a transcriber."""
    info = encoder_info(name)
    if info.modality == "transcript":
        return None
    return int(info.load_class().probe_dim(path=path, **options))


def create_encoder(name: str, **kwargs: Any):
    """Build (and load) an encoder: `create_encoder("clip", path=..., device="cuda", projection=False)`."""
    if name not in REGISTRY:
        raise InputError(f"unknown encoder {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)
