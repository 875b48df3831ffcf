"""Audio encoders: `wav2vec2` (transformers, frame-level hidden states, ~50 Hz) and
weight-free `lite-audio` (log-mel statistics, 10 Hz; numpy only).

Both take a list of float32 mono waveforms at 16 kHz and return one (T, dim) float32
array per waveform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.extract.checkpoints import require_dir
from emi_ray.extract.encoders import config_int, load_tail

SAMPLE_RATE = 16000
W2V_WHAT = "a transformers Wav2Vec2 model directory (config.json + weights)"
W2V_MIN_SAMPLES = 400  # the conv feature extractor's receptive field: one output frame
HOP = 160  # lite-audio: 10 ms mel hop


def _hops_per_frame(frame_seconds: float) -> int:
    return max(1, int(round(frame_seconds * SAMPLE_RATE / HOP)))


class Wav2Vec2Encoder:
    """transformers `Wav2Vec2Model` from a local directory; hidden states of `layer` (-1 = last).

    Each waveform is normalised to zero mean / unit variance when the model's
    preprocessor config asks for it (as Wav2Vec2FeatureExtractor does), then run in
    windows of `chunk_seconds` (attention cost is quadratic in length) whose outputs are
    concatenated: ~50 frames per second of audio.
    """

    name = "wav2vec2"
    modality = "audio"
    rate_hz = 50.0
    sample_rate = SAMPLE_RATE

    def __init__(self, path: str | Path | None = None, device: str = "cpu", layer: int = -1,
                 chunk_seconds: float = 30.0, tail: str | Path | None = None, **_: Any):
        p = require_dir(path, "wav2vec2", W2V_WHAT)
        import torch  # lazy: heavy; the weight-free lite-audio in this module needs neither
        from transformers import Wav2Vec2Model

        self._torch = torch
        self.model = Wav2Vec2Model.from_pretrained(p, local_files_only=True).to(device).eval()
        load_tail(self.model, tail, self.name)  # a stage-I run's fine-tuned last blocks, if given
        self.normalize = True
        if (p / "preprocessor_config.json").is_file():
            from transformers import Wav2Vec2FeatureExtractor

            fe = Wav2Vec2FeatureExtractor.from_pretrained(p, local_files_only=True)
            self.normalize = bool(getattr(fe, "do_normalize", True))
        self.device, self.layer = device, layer
        self.chunk = max(W2V_MIN_SAMPLES, int(chunk_seconds * SAMPLE_RATE))
        self.dim = int(self.model.config.hidden_size)

    @staticmethod
    def probe_dim(path: str | Path | None = None, **_: Any) -> int:
        return config_int(path, "wav2vec2", "hidden_size", W2V_WHAT)

    @staticmethod
    def probe_rate(**_: Any) -> float:
        return 50.0  # 16 kHz / the conv stack's total stride of 320 samples

    def _one(self, wave: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = np.asarray(wave, np.float32)
        if self.normalize and x.size:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        if x.size < W2V_MIN_SAMPLES:
            x = np.pad(x, (0, W2V_MIN_SAMPLES - x.size))
        bounds = list(range(0, x.size, self.chunk)) + [x.size]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < W2V_MIN_SAMPLES:
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
