"""Fine-tuning the last N blocks of a stage-I backbone (`stage1.train_blocks = N > 0`).

Transformer backbones: `clip` (open_clip ViT image tower: `transformer.resblocks`),
`wav2vec2` (transformers Wav2Vec2Model: `encoder.layers`), `bert` (transformers BERT:
`encoder.layer`). Everything before block L-N stays frozen, so its output (the input of
block L-N: one hidden-state sequence per corpus item) is computed once, through the
encoder's own `encode` (a forward pre-hook captures it), and cached like the frozen
features. Each training step runs only the trainable `Tail`: blocks L-N..L-1, the norms
after them (clip: ln_post and the projection; wav2vec2 large: the final layer norm) and
the encoder's own pooling (clip: pooled [CLS]; wav2vec2: the chosen layer's frames,
mean over time as stage I pools them; bert: mean over tokens or [CLS]).

A tail's weights are named as in the encoder's `model.state_dict()`, so an encoder loads
them over its own with its `tail=FILE` option (`extract.encoders.load_tail`): that is how
`extract --aligned RUN` extracts through the fine-tuned encoders.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from emi_ray.errors import EmiError

BACKBONES = ("clip", "wav2vec2", "bert")
# encoder options that change what the tail computes (must match between a run and an extraction)
SEMANTIC = {"clip": {"arch": "ViT-B-16", "projection": False}, "wav2vec2": {"layer": -1},
            "bert": {"pooling": "mean", "max_tokens": 128}}


class TrainBlocksError(EmiError):
    """stage1.train_blocks does not fit the chosen encoders."""


def check_backbone(name: str, blocks: int) -> None:
    """Fail (one line) unless `name` is an encoder with blocks to fine-tune."""
    if name not in BACKBONES:
        raise TrainBlocksError(
            f"stage1.train_blocks={blocks}: encoder {name!r} has no transformer blocks to fine-tune; "
            f"use {'/'.join(BACKBONES)} for every modality (--video-encoder clip --audio-encoder wav2vec2 "
            f"--text-encoder bert) or stage1.train_blocks=0")


def semantic_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return {k: options.get(k, d) for k, d in SEMANTIC.get(name, {}).items()}


def _mask_for(model: nn.Module, h: torch.Tensor, lens: torch.Tensor):
    """The attention mask the model's layers take for right-padded sequences of `lens` (None: no padding)."""
    if bool((lens == h.shape[1]).all()):
        return None
    mask2d = (torch.arange(h.shape[1])[None] < lens[:, None]).long()
    from transformers.masking_utils import create_bidirectional_mask  # only transformers backbones get here

    return create_bidirectional_mask(config=model.config, inputs_embeds=h, attention_mask=mask2d)


def _mean(h: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    m = (torch.arange(h.shape[1])[None] < lens[:, None]).to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


class Tail(nn.Module):
    """The trainable last `blocks` blocks of an encoder's backbone, plus its pooling.

    `forward(states, lens)`: right-padded prefix outputs (B, S, D) and their lengths (B,)
    -> pooled (B, encoder.dim). `state()` / `load_state()`: the tail's weights, named as
    in the encoder's model. The rest of the model stays frozen (and in eval mode)."""

    def __init__(self, encoder: Any, blocks: int):
        super().__init__()
        check_backbone(encoder.name, blocks)
        self.name, self.dim = encoder.name, int(encoder.dim)
        self.model = encoder.model
        all_blocks, self.end, self.post = self._layout(encoder)
        if blocks < 1 or blocks > self.end:
            raise TrainBlocksError(
                f"stage1.train_blocks={blocks}: encoder {self.name!r} has {self.end} blocks"
                f"{' below its chosen layer' if self.end < len(all_blocks) else ''}; choose 1..{self.end}")
        self.start = self.end - blocks
        self.blocks = list(all_blocks[self.start : self.end])
        self.capture_at = all_blocks[self.start]
        self.block_prefix = {"clip": "transformer.resblocks.", "wav2vec2": "encoder.layers.",
                             "bert": "encoder.layer."}[self.name]
        self.keys = [k for k in self.model.state_dict() if self._in_tail(k)]
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.keys)
        self.pooling = getattr(encoder, "pooling", "mean")
        self.train(False)

    def _layout(self, encoder: Any):
        m = encoder.model
        if self.name == "clip":
            return m.transformer.resblocks, len(m.transformer.resblocks), None
        if self.name == "wav2vec2":
            layers = m.encoder.layers
            if getattr(m, "adapter", None) is not None:
                raise TrainBlocksError("stage1.train_blocks: wav2vec2 models with an adapter are not supported")
            if encoder.layer == -1:  # last_hidden_state: the large models' final layer norm follows
                stable = bool(getattr(m.config, "do_stable_layer_norm", False))
                return layers, len(layers), (m.encoder.layer_norm if stable else None)
            return layers, encoder.layer % (len(layers) + 1), None  # hidden_states[k]: the input of layer k
        return m.encoder.layer, len(m.encoder.layer), None

    def _in_tail(self, key: str) -> bool:
        if key.startswith(self.block_prefix):
            return self.start <= int(key[len(self.block_prefix) :].split(".")[0]) < self.end
        if self.name == "clip":  # after the blocks: ln_post, proj, attention pooling
            return not key.startswith(("conv1.", "class_embedding", "positional_embedding", "ln_pre.",
                                       "patch_dropout", "transformer."))
        return self.post is not None and key.startswith("encoder.layer_norm.")

    def trainable(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if n in self.keys]

    def state(self) -> dict[str, torch.Tensor]:
        sd = self.model.state_dict()
        return {k: sd[k].detach().clone() for k in self.keys}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> Tail:
        self.training = mode
        self.model.eval()
        for b in self.blocks:  # dropout in the trained blocks only
            b.train(mode)
        return self

    def forward(self, states: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        h = states
        if self.name == "clip":
            tr = self.model.transformer
            if not tr.batch_first:
                h = h.transpose(0, 1)
            for b in self.blocks:
                h = b(h)
            if not tr.batch_first:
                h = h.transpose(0, 1)
            pooled, _ = self.model._pool(h)
            return pooled @ self.model.proj if self.model.proj is not None else pooled
        mask = _mask_for(self.model, h, lens)
        for b in self.blocks:
            out = b(h, attention_mask=mask)
            h = out[0] if isinstance(out, tuple) else out
        if self.post is not None:
            h = self.post(h)
        if self.name == "bert" and self.pooling == "cls":
            return h[:, 0]
        return _mean(h, lens)


def capture_prefix(encoder: Any, tail: Tail, batches) -> list[np.ndarray]:
    """Per item, the (S, D) input of the tail's first block, through `encoder.encode` on each
    batch of `batches` (clips, waveforms or texts): one array per item, padding stripped."""
    got: list[torch.Tensor] = []

    def hook(_mod, args, _kwargs):
        got.append(args[0].detach().float().cpu())

    handle = tail.capture_at.register_forward_pre_hook(hook, with_kwargs=True)
    out: list[np.ndarray] = []
    try:
        for batch in batches:
            if encoder.name == "wav2vec2":  # one call per waveform: its windows joined in time
                for w in batch:
                    got.clear()
                    encoder.encode([w])
                    out.append(torch.cat(got, 1)[0].numpy())
                continue
            got.clear()
            encoder.encode(batch)
            if encoder.name == "clip":
                first = tail.model.transformer.batch_first
                h = torch.cat(got, 0) if first else torch.cat(got, 1).transpose(0, 1)
                out += [x.numpy() for x in h]
                continue
            h = torch.cat(got, 0)
            tok = encoder.tokenizer(list(batch), padding=True, truncation=True, max_length=encoder.max_tokens)
            lens = [int(sum(m)) for m in tok["attention_mask"]]
            out += [h[i, :n].numpy() for i, n in enumerate(lens)]
    finally:
        handle.remove()
    return out


def pad(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(n, S_max, D) zero-padded float32 states and (n,) lengths."""
    lens = np.array([len(s) for s in seqs], np.int64)
    out = np.zeros((len(seqs), int(lens.max()), seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lens


def tail_record(tail: Tail, options: dict[str, Any], blocks: int, state: dict[str, torch.Tensor]) -> dict:
    """What RUN/tails/<modality>.pt holds (torch.load(weights_only=True))."""
    return {"encoder": tail.name, "blocks": int(blocks), "options": semantic_options(tail.name, options),
            "state": state}
