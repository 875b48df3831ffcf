"""Audio encoders: `wav2vec2`, `wavlm` and `hubert` (transformers, frame-level hidden states,
~50 Hz; one shared class) and weight-free `lite-audio` (log-mel statistics, 10 Hz; numpy only).

All take a list of float32 mono waveforms at 16 kHz and return one (T, dim) float32
array per waveform.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.errors import InputError
from emi_ray.extract.checkpoints import require_dir
from emi_ray.extract.encoders import config_int, load_pretrained, load_tail, read_config

SAMPLE_RATE = 16000
W2V_WHAT = "a transformers Wav2Vec2 model directory (config.json + weights)"
# the conv feature extractor every one of these models shares (wav2vec2 / WavLM / HuBERT defaults)
CONV_KERNEL, CONV_STRIDE = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
HOP = 160  # lite-audio: 10 ms mel hop


def _hops_per_frame(frame_seconds: float) -> int:
    return max(1, int(round(frame_seconds * SAMPLE_RATE / HOP)))


def receptive_field(kernels, strides) -> int:
    """Samples behind one output frame of a conv stack (400 for the default one: 25 ms)."""
    r = 1
    for k, s in zip(reversed(tuple(kernels)), reversed(tuple(strides))):
        r = (r - 1) * int(s) + int(k)
    return r


class TransformersAudioEncoder:
    """A transformers speech model of the wav2vec2 family from a local directory; hidden states
    of `layer` (-1 = the last hidden state, 0 = the input of the first transformer layer).

    Each waveform is normalised to zero mean / unit variance when the model's preprocessor
    config asks for it (as Wav2Vec2FeatureExtractor does; without one, it is), then run in
    windows of `chunk_seconds` (attention cost is quadratic in length) whose outputs are
    concatenated: one frame per conv stride (320 samples: 50 per second of audio).
    Subclasses name the model class and the config's `model_type`.
    """

    name = "wav2vec2"
    model_class = "Wav2Vec2Model"
    model_types: tuple[str, ...] = ("wav2vec2",)
    what = W2V_WHAT
    modality = "audio"
    sample_rate = SAMPLE_RATE

    def __init__(self, path: str | Path | None = None, device: str = "cpu", layer: int = -1,
                 chunk_seconds: float = 30.0, tail: str | Path | None = None, **_: Any):
        p = require_dir(path, self.name, self.what)
        cfg = self._checked_config(p, layer)
        import torch  # lazy: heavy; the weight-free lite-audio in this module needs neither
        import transformers

        self._torch = torch
        model = load_pretrained(getattr(transformers, self.model_class), p, self.name, self.what)
        self.model = model.to(device).eval()
        load_tail(self.model, tail, self.name)  # a stage-I run's fine-tuned last blocks, if given
        self.normalize = True
        if (p / "preprocessor_config.json").is_file():
            fe = load_pretrained(transformers.Wav2Vec2FeatureExtractor, p, self.name, self.what)
            self.normalize = bool(getattr(fe, "do_normalize", True))
        self.device, self.layer = device, layer
        self.min_samples = receptive_field(cfg.get("conv_kernel", CONV_KERNEL), cfg.get("conv_stride", CONV_STRIDE))
        self.chunk = max(self.min_samples, int(chunk_seconds * SAMPLE_RATE))
        self.rate_hz = self.probe_rate(path=p)
        self.dim = int(self.model.config.hidden_size)

    def _checked_config(self, p: Path, layer: int) -> dict[str, Any]:
        """config.json, refused when it is another model family (transformers would load it with
        random weights) or has no hidden state `layer`."""
        cfg = read_config(p, self.name, self.what)
        kind = cfg.get("model_type")
        if kind not in self.model_types:
            other = next((n for n, c in AUDIO_MODEL_TYPES.items() if kind in c), None)
            hint = f"use the {other!r} encoder" if other else f"give {self.what}"
            raise InputError(f"encoder {self.name!r}: {p / 'config.json'} is a {kind!r} model, not "
                             f"{' / '.join(self.model_types)}; {hint}")
        n = int(cfg.get("num_hidden_layers", 0))
        if not isinstance(layer, int) or not -(n + 1) <= layer <= n:
            raise InputError(f"encoder {self.name!r}: layer {layer!r}: choose -1 (the last hidden state) or "
                             f"0..{n} (k: the output of transformer layer k, 0: their input; {p} has {n} layers)")
        return cfg

    @classmethod
    def probe_dim(cls, path: str | Path | None = None, **_: Any) -> int:
        return config_int(path, cls.name, "hidden_size", cls.what)

    @classmethod
    def probe_rate(cls, path: str | Path | None = None, **_: Any) -> float:
        """Frames per second: 16 kHz over the conv stack's total stride (320 samples: 50 Hz)."""
        p = Path(path).expanduser() if path is not None else None
        strides = CONV_STRIDE
        if p is not None and (p / "config.json").is_file():
            strides = read_config(p, cls.name, cls.what).get("conv_stride", CONV_STRIDE)
        return SAMPLE_RATE / math.prod(int(s) for s in strides)

    def _one(self, wave: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = np.asarray(wave, np.float32)
        if self.normalize and x.size:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        if x.size < self.min_samples:
            x = np.pad(x, (0, self.min_samples - x.size))
        bounds = list(range(0, x.size, self.chunk)) + [x.size]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < self.min_samples:
            del bounds[-2]  # fold a too-short tail into the previous window
        outs = []
        with torch.inference_mode():
            for a, b in zip(bounds, bounds[1:]):
                t = torch.tensor(x[a:b])[None].to(self.device)  # a copy: Ray hands read-only arrays
                if self.layer == -1:
                    h = self.model(t).last_hidden_state
                else:
                    h = self.model(t, output_hidden_states=True).hidden_states[self.layer]
                outs.append(h[0].float().cpu().numpy())
        return np.concatenate(outs).astype(np.float32, copy=False)

    def encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [self._one(w) for w in waves]


class Wav2Vec2Encoder(TransformersAudioEncoder):
    """wav2vec 2.0 (the paper's and the organisers' audio features)."""


class WavLMEncoder(TransformersAudioEncoder):
    """WavLM (e.g. microsoft/wavlm-base-plus): the 10th ABAW runner-up's audio features."""

    name, model_class, model_types = "wavlm", "WavLMModel", ("wavlm",)
    what = "a transformers WavLM model directory (config.json + weights)"


class HubertEncoder(TransformersAudioEncoder):
    """HuBERT (e.g. facebook/hubert-base-ls960)."""

    name, model_class, model_types = "hubert", "HubertModel", ("hubert",)
    what = "a transformers HuBERT model directory (config.json + weights)"


AUDIO_MODEL_TYPES = {c.name: c.model_types for c in (Wav2Vec2Encoder, WavLMEncoder, HubertEncoder)}


def hann_window(n: int) -> np.ndarray:
    """The periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> np.ndarray:
    """(n_freqs, n_mels) triangular HTK-mel filters, unnormalised (torchaudio's melscale_fbanks defaults)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    freqs = np.linspace(0, sample_rate // 2, n_freqs)
    f_pts = 700.0 * (10.0 ** (np.linspace(mel(f_min), mel(f_max), n_mels + 2) / 2595.0) - 1.0)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - freqs[:, None]
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


class LiteAudioEncoder:
    """Weight-free: a log-mel spectrogram (25 ms windows, 10 ms hop, `n_mels` bands) summarised
    per `frame_seconds` window by its mean and standard deviation over time: (T, 2 n_mels).

    The mean carries pitch (which harmonics light up) and loudness, the standard deviation
    modulation within the window (syllables, tremolo, vibrato). Deterministic, numpy only (no
    torch to import, so an encoder process starts at once); the spectrogram is the one of
    torchaudio's `MelSpectrogram(n_fft=512, win_length=400, hop_length=160, f_min=50,
    f_max=8000, power=2)`: centred reflect-padded frames, periodic Hann window, HTK mel filters.
    """

    name = "lite-audio"
    modality = "audio"
    sample_rate = SAMPLE_RATE
    n_fft, win_length = 512, 400

    def __init__(self, n_mels: int = 64, frame_seconds: float = 0.1, **_: Any):
        self.hop = HOP
        self.per_frame = _hops_per_frame(frame_seconds)
        self.rate_hz = self.probe_rate(frame_seconds)
        self.dim = 2 * int(n_mels)
        left = (self.n_fft - self.win_length) // 2  # the window sits centred in the FFT frame
        self.window = np.zeros(self.n_fft, np.float32)
        self.window[left : left + self.win_length] = hann_window(self.win_length)
        self.fbank = mel_filterbank(self.n_fft // 2 + 1, 50.0, 8000.0, int(n_mels), SAMPLE_RATE)

    @staticmethod
    def probe_dim(path: str | Path | None = None, n_mels: int = 64, **_: Any) -> int:
        return 2 * int(n_mels)

    @staticmethod
    def probe_rate(frame_seconds: float = 0.1, **_: Any) -> float:
        return SAMPLE_RATE / (HOP * _hops_per_frame(frame_seconds))

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """(hops, n_mels) log power mel spectrogram, one row per 10 ms hop (1 + len // hop rows)."""
        x = np.asarray(wave, np.float32)
        if x.size < self.win_length:
            x = np.pad(x, (0, self.win_length - x.size))
        x = np.pad(x, self.n_fft // 2, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop] * self.window
        spec = np.fft.rfft(frames, axis=1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        return np.log(power @ self.fbank + 1e-6)

    def _one(self, wave: np.ndarray) -> np.ndarray:
        m = self.log_mel(wave)
        hops = m.shape[0]
        t = -(-hops // self.per_frame)
        pad = t * self.per_frame - hops
        if pad:  # repeat the last hop into the final, partial window
            m = np.concatenate([m, np.repeat(m[-1:], pad, axis=0)])
        w = m.reshape(t, self.per_frame, -1)
        return np.concatenate([w.mean(1), w.std(1)], 1).astype(np.float32)

    def encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [self._one(w) for w in waves]
