"""Sentence encoders over a transformers text model from a local directory: `text-lm` (any
model: BERT-like encoders and decoder-only LMs such as GPT-2 or Llama) and `bert` (the same
code under the name stage I's fine-tuned tails know).

A text becomes the mean (default) of the last hidden state over its tokens, the way the 10th
ABAW runner-up used an LLM's token features; `pooling: last` takes the last token's state
(a causal LM's summary of the whole text), `cls` the first (BERT's [CLS]). Texts are cut at
`max_tokens` tokens.

Padding never changes a text's vector: every batch is padded on the right by this code,
whatever side the tokenizer pads on, so a causal LM's real tokens keep positions 0..n-1 and
never see a pad (they attend only to earlier tokens), and a bidirectional encoder masks the
pads out. A tokenizer without a pad token (GPT-2, Llama) needs none: pads are masked, so any
id does. A text of no tokens (an empty transcript for a tokenizer that adds no special
tokens) is the zero vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.errors import InputError
from emi_ray.extract.checkpoints import require_dir
from emi_ray.extract.encoders import config_int, load_pretrained, load_tail, read_config

POOLINGS = ("mean", "last", "cls")
# where a transformers config keeps the model width (GPT-2: n_embd; DistilBERT: dim; T5: d_model)
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
# a tokenizer's vocabulary file, one of these (without any, transformers builds an empty tokenizer silently)
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "spiece.model",
               "sentencepiece.bpe.model")


class LMTextEncoder:
    """Any transformers text model (AutoModel + AutoTokenizer from `path`), pooled per text."""

    name = "text-lm"
    modality = "text"
    rate_hz = None
    what = ("a transformers text model directory (config.json + weights + tokenizer files): an encoder "
            "(BERT-like) or a decoder-only LM (GPT-2/Llama-like)")

    def __init__(self, path: str | Path | None = None, pooling: str = "mean", device: str = "cpu",
                 max_tokens: int = 128, tail: str | Path | None = None, **_: Any):
        if pooling not in POOLINGS:
            raise InputError(f"encoder {self.name!r}: pooling {pooling!r}: choose {', '.join(POOLINGS)}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise InputError(f"encoder {self.name!r}: max_tokens {max_tokens!r}: a whole number >= 1")
        self.path = require_dir(path, self.name, self.what)
        read_config(self.path, self.name, self.what)  # config.json missing: named before transformers loads
        if not any((self.path / f).is_file() for f in VOCAB_FILES):
            raise InputError(f"encoder {self.name!r}: {self.path} has no tokenizer ({' / '.join(VOCAB_FILES)}); "
                             f"download the model's tokenizer files into it too")
        import torch  # lazy: heavy; only model encoders need torch and transformers
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = load_pretrained(AutoTokenizer, self.path, self.name, self.what)
        self.model = load_pretrained(AutoModel, self.path, self.name, self.what).to(device).eval()
        load_tail(self.model, tail, self.name)  # a stage-I run's fine-tuned last blocks, if given
        self.device, self.pooling, self.max_tokens = device, pooling, max_tokens
        cfg = self.model.config
        self.dim = int((cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg).hidden_size)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0  # masked out: any id in the vocabulary does

    @classmethod
    def probe_dim(cls, path: str | Path | None = None, **_: Any) -> int:
        return config_int(path, cls.name, WIDTH_KEYS, cls.what)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids (special tokens included), cut at `max_tokens`."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        return [list(ids) for ids in enc["input_ids"]]

    def _right_padded(self, ids: list[list[int]]):
        torch = self._torch
        lens = torch.tensor([len(x) for x in ids])
        x = torch.full((len(ids), int(lens.max())), self.pad_id, dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask = (torch.arange(x.shape[1])[None] < lens[:, None]).long()
        return x.to(self.device), mask.to(self.device), lens.to(self.device)

    def _pool(self, h, mask, lens):
        if self.pooling == "cls":
            return h[:, 0]
        if self.pooling == "last":
            return h[self._torch.arange(h.shape[0], device=h.device), lens - 1]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        ids = self.token_ids(texts) if texts else []
        keep = [i for i, row in enumerate(ids) if row]
        if not keep:
            return out
        x, mask, lens = self._right_padded([ids[i] for i in keep])
        with self._torch.inference_mode():
            h = self.model(input_ids=x, attention_mask=mask).last_hidden_state.float()
        out[keep] = self._pool(h, mask, lens).cpu().numpy()
        return out


class BertTextEncoder(LMTextEncoder):
    """A BERT-architecture encoder (the paper's text encoder): `text-lm`'s code under the name
    stage I knows (its fine-tuned tails and backbone layout are BERT's)."""

    name = "bert"
    what = "a BERT/sentence-encoder model directory (config.json + weights)"
