"""Video frame encoders: `clip` (open_clip ViT-B-16 image tower) and weight-free `lite-video`.

Both take a list of uint8 (T, H, W, 3) RGB clips (frames already resampled by time, see
decode.py) and return one (T, dim) float32 array per clip: one vector per frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.errors import InputError
from emi_ray.extract.encoders import load_tail

# open_clip's OPENAI_DATASET_MEAN / STD (kept here so probing needs no open_clip import)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_FILE = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
SCALE = 16.0
WHAT = ("an open_clip checkpoint: a state-dict file (.bin/.pt/.safetensors), or a directory with "
        f"{CONFIG_FILE} and {WEIGHT_NAMES[0]} or {WEIGHT_NAMES[1]}")


def resolve_clip(path: str | Path | None, arch: str = "ViT-B-16") -> tuple[Path, dict, dict]:
    """(weights file, open_clip model_cfg, preprocess_cfg) for a local checkpoint.

    `path` is a state-dict file (its architecture is `arch`, an open_clip config name, unless
    an `open_clip_config.json` sits beside it) or a directory in the hub's open_clip layout
    (`open_clip_config.json` + `open_clip_model.safetensors` / `open_clip_pytorch_model.bin`).
    """
    if path is None:
        raise InputError(f"encoder 'clip' needs a local path: {WHAT} (no model hub is used)")
    p = Path(path).expanduser()
    if p.is_dir():
        weights = next((p / n for n in WEIGHT_NAMES if (p / n).is_file()), None)
        if weights is None:
            found = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) + sorted(p.glob("*.pt"))
            weights = found[0] if len(found) == 1 else None
        if weights is None:
            raise InputError(f"encoder 'clip': {p} holds no single checkpoint file ({WHAT})")
        cfg_file = p / CONFIG_FILE
    elif p.is_file():
        weights, cfg_file = p, p.parent / CONFIG_FILE
    else:
        raise InputError(f"encoder 'clip': {p} not found ({WHAT})")
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text())
            return weights, dict(cfg["model_cfg"]), dict(cfg.get("preprocess_cfg") or {})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{cfg_file}: not an open_clip config ({e}); expected {{'model_cfg': ...}}") from None
    import open_clip  # lazy: heavy (torch); probing a directory with its own config never needs it

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise InputError(f"encoder 'clip': unknown open_clip architecture {arch!r} (e.g. ViT-B-16, "
                         f"ViT-B-16-quickgelu for OpenAI weights)")
    return weights, dict(model_cfg), {}


def load_state_dict(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors (never unpickles code): safetensors, or torch.load(weights_only=True)."""
    import torch  # lazy: heavy; the weight-free lite-video in this module needs neither

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a JIT archive, a pickle with code, a damaged file
        raise InputError(f"{path}: cannot load as a state dict ({type(e).__name__}: {str(e)[:200]}); "
                         f"give an open_clip state dict (.bin/.pt/.safetensors)") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    if any(k.startswith("visual.") for k in sd):
        sd = {k[7:]: v for k, v in sd.items() if k.startswith("visual.")}
    return sd


class ClipImageEncoder:
    """The open_clip ViT image tower from a local checkpoint; per-frame pooled [CLS] embedding.

    `projection=False` (default, as in the paper) gives the 768-d pre-projection embedding
    of ViT-B-16; `projection=True` the 512-d CLIP embedding. Only the image tower is built.
    """

    name = "clip"
    modality = "video"
    rate_hz = None

    def __init__(self, path: str | Path | None = None, device: str = "cpu", arch: str = "ViT-B-16",
                 projection: bool = False, frames_per_batch: int = 64, tail: str | Path | None = None, **_: Any):
        import torch  # lazy: heavy, as above
        from open_clip.model import _build_vision_tower

        weights, model_cfg, pre = resolve_clip(path, arch)
        self._torch = torch
        visual = _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"],
                                     quick_gelu=bool(model_cfg.get("quick_gelu", False)))
        sd = load_state_dict(weights)
        try:
            missing, unexpected = visual.load_state_dict(sd, strict=False)
            why = f"missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]}"
        except RuntimeError as e:  # shape mismatches
            missing, unexpected, why = True, [], str(e).splitlines()[-1].strip()[:200]
        if missing or unexpected:
            raise InputError(
                f"{weights}: checkpoint does not fit the {model_cfg['vision_cfg'].get('width')}-wide image tower "
                f"of its config ({why}); check the architecture (arch: option in --models, "
                f"or open_clip_config.json beside the checkpoint)")
        if not projection:
            visual.proj = None
        load_tail(visual, tail, self.name)  # a stage-I run's fine-tuned last blocks, if given
        self.model = visual.to(device).eval()
        self.device, self.frames_per_batch = device, frames_per_batch
        self.input_size = self.probe_input_size(path, arch)
        self.dim = self.probe_dim(path, arch, projection)
        mean, std = pre.get("mean", CLIP_MEAN), pre.get("std", CLIP_STD)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(device)

    @staticmethod
    def probe_dim(path: str | Path | None = None, arch: str = "ViT-B-16", projection: bool = False,
                  **_: Any) -> int:
        _, model_cfg, _ = resolve_clip(path, arch)
        return int(model_cfg["embed_dim"] if projection else model_cfg["vision_cfg"].get("width", 768))

    @staticmethod
    def probe_input_size(path: str | Path | None = None, arch: str = "ViT-B-16", **_: Any) -> int:
        _, model_cfg, _ = resolve_clip(path, arch)
        size = model_cfg["vision_cfg"].get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    def encode(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        lengths = [len(c) for c in clips]
        if not sum(lengths):
            return [np.zeros((0, self.dim), np.float32) for _ in clips]
        frames = np.concatenate([c for c in clips if len(c)])
        out = []
        cuda = str(self.device).startswith("cuda")
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=cuda):
            for i in range(0, len(frames), self.frames_per_batch):
                x = torch.from_numpy(frames[i : i + self.frames_per_batch]).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                    x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size),
                                                        mode="bilinear", antialias=True, align_corners=False)
                x = (x - self._mean) / self._std
                out.append(self.model(x).float().cpu().numpy())
        feats = np.concatenate(out)
        return _split(feats, lengths)


class LiteVideoEncoder:
    """Weight-free: each frame area-pooled to `grid` x `grid` RGB, centred, times a fixed
    seeded Gaussian projection to `dim` (the same on every machine). Fast, deterministic,
    and it keeps the colour and coarse shape changes that carry the synthetic labels.

    Frames are decoded at `input_size` (default 16 = grid: the decoder's area scaling does
    the pooling); a larger multiple of `grid` pools k x k blocks inside the projection."""

    name = "lite-video"
    modality = "video"
    rate_hz = None

    def __init__(self, dim: int = 256, grid: int = 16, input_size: int = 16, seed: int = 0, **_: Any):
        if input_size % grid:
            raise InputError(f"lite-video: input_size {input_size} must be a multiple of grid {grid}")
        self.dim, self.grid, self.input_size = int(dim), int(grid), int(input_size)
        n = grid * grid * 3
        rng = np.random.default_rng([seed, 0x5EED])
        # pooled pixels in [-0.5, 0.5]: scale so features have roughly unit spread
        self.w = (rng.standard_normal((n, self.dim)) * (SCALE / np.sqrt(n))).astype(np.float32)
        # pooling and projection are both linear: fold them into one (size^2 * 3, dim) matrix
        # acting on raw uint8 pixels, plus a bias for the -0.5 centring
        k = self.input_size // grid
        w = self.w.reshape(grid, 1, grid, 1, 3, self.dim) / (k * k * 255.0)
        self._w_full = np.ascontiguousarray(
            np.broadcast_to(w, (grid, k, grid, k, 3, self.dim)).reshape(-1, self.dim), dtype=np.float32)
        self._bias = (-0.5 * self.w.sum(0)).astype(np.float32)

    @staticmethod
    def probe_dim(path: str | Path | None = None, dim: int = 256, **_: Any) -> int:
        return int(dim)

    @staticmethod
    def probe_input_size(path: str | Path | None = None, input_size: int = 16, **_: Any) -> int:
        return int(input_size)

    def encode(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        lengths = [len(c) for c in clips]
        if not sum(lengths):
            return [np.zeros((0, self.dim), np.float32) for _ in clips]
        x = np.concatenate([c for c in clips if len(c)])
        n, h, w, _ = x.shape
        if (h, w) != (self.input_size, self.input_size):  # decoded at another size: nearest-sample
            ys = (np.arange(self.input_size) * h) // self.input_size
            xs = (np.arange(self.input_size) * w) // self.input_size
            x = x[:, ys][:, :, xs]
        feats = x.reshape(n, -1).astype(np.float32) @ self._w_full + self._bias
        return _split(feats, lengths)


def _split(feats: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    out, start = [], 0
    for n in lengths:
        out.append(np.ascontiguousarray(feats[start : start + n], dtype=np.float32))
        start += n
    return out
