"""Encoder registry: one small interface for every feature encoder.

An encoder has a `name`, a `modality` (video | audio | text), an output `dim`, and
`encode(batch) -> np.ndarray (B, dim)` for text or a list of (T, dim) arrays for sequences.
Weights always come from a local path (no hub at run time); weight-free encoders need none.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emi_ray.errors import InputError

_WORD = re.compile(r"[a-z0-9']+")


class HashingTextEncoder:
    """Deterministic bag of words and bigrams hashed into `dim` signed buckets, L2-normalised.

    Needs no weights and is the same on every machine (crc32, not Python's salted hash).
    """

    name = "hash"
    modality = "text"

    def __init__(self, dim: int = 256, **_: Any):
        self.dim = dim

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

    def __init__(self, path: str | Path | None = None, pooling: str = "mean", device: str = "cpu",
                 max_tokens: int = 128, **_: Any):
        from emi_ray.extract.checkpoints import require_dir

        self.path = require_dir(path, "bert", "a BERT/sentence-encoder model directory (config.json + weights)")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(device).eval()
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


REGISTRY: dict[str, Callable[..., Any]] = {
    "hash": HashingTextEncoder,
    "bert": BertTextEncoder,
}


def register(name: str, factory: Callable[..., Any]) -> None:
    REGISTRY[name] = factory


def create_encoder(name: str, **kwargs: Any):
    if name not in REGISTRY:
        raise InputError(f"unknown encoder {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)
