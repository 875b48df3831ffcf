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
| wavlm      | audio      | transformers WavLMModel directory           | hidden size, ~50 Hz  |
| hubert     | audio      | transformers HubertModel directory          | hidden size, ~50 Hz  |
| bert       | text       | transformers BERT-style model directory     | hidden size          |
| text-lm    | text       | any transformers text model dir (BERT, LM)  | hidden size          |
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


def load_tail(model: Any, tail: str | Path | None, encoder: str) -> None:
    """Load a stage-I run's fine-tuned tail weights (RUN/tails/<modality>.pt, `tail=` option of
    every model encoder; stage I writes them for clip / wav2vec2 / bert) over `model`'s own; None leaves the
    model as loaded."""
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


def read_config(path: str | Path | None, encoder: str, what: str) -> dict[str, Any]:
    """`path/config.json` of a transformers model directory, as a dict; one-line errors naming the file."""
    cfg = require_dir(path, encoder, what) / "config.json"
    try:
        raw = json.loads(cfg.read_text())
    except FileNotFoundError:
        raise InputError(f"encoder {encoder!r}: {cfg} not found ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"encoder {encoder!r}: {cfg} is not a readable JSON config ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"encoder {encoder!r}: {cfg} is not a JSON object ({what})")
    return raw


def config_int(path: str | Path | None, encoder: str, key: str | tuple[str, ...], what: str) -> int:
    """An integer field of `path/config.json`: the first of `key` present (top level, then a
    multimodal model's `text_config`)."""
    raw = read_config(path, encoder, what)
    keys = (key,) if isinstance(key, str) else key
    for section in (raw, raw.get("text_config") or {}):
        for k in keys:
            if k in section:
                try:
                    return int(section[k])
                except (TypeError, ValueError) as e:
                    raise InputError(f"encoder {encoder!r}: {Path(path) / 'config.json'}: {k!r} is not an "
                                     f"integer ({e})") from None
    raise InputError(f"encoder {encoder!r}: {Path(path) / 'config.json'} has no {' / '.join(map(repr, keys))} "
                     f"({what})")


def load_pretrained(loader: Callable[..., Any], path: Path, encoder: str, what: str) -> Any:
    """`loader.from_pretrained(path, local_files_only=True)` (a transformers model or tokenizer class),
    a missing or broken file as one InputError naming the directory: never a download."""
    try:
        return loader.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise InputError(f"encoder {encoder!r}: cannot load {getattr(loader, '__name__', loader)} from {path} "
                         f"({first[:200]}); it must hold {what}") from None


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
        EncoderInfo("wavlm", "audio", "dir", "a transformers WavLM model directory (config.json + weights)",
                    "emi_ray.extract.audio_encoders:WavLMEncoder"),
        EncoderInfo("hubert", "audio", "dir", "a transformers HuBERT model directory (config.json + weights)",
                    "emi_ray.extract.audio_encoders:HubertEncoder"),
        EncoderInfo("bert", "text", "dir", "a BERT/sentence-encoder model directory (config.json + weights)",
                    "emi_ray.extract.text_encoders:BertTextEncoder"),
        EncoderInfo("text-lm", "text", "dir", "a transformers text model directory (config.json + weights + "
                    "tokenizer files): an encoder (BERT-like) or a decoder-only LM (GPT-2/Llama-like)",
                    "emi_ray.extract.text_encoders:LMTextEncoder"),
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
    **{n: _lazy(i) for n, i in INFO.items() if n != "hash"},
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
