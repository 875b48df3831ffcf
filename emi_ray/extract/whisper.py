"""`whisper`: faster-whisper transcription from a local model directory, VAD on.

A transcriber is an encoder whose output is text: `encode(waves) -> list[str]`. The
pipeline writes each transcript to `text/<id>.txt` and then encodes it with the text
encoder (bert or hash), as the paper does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.extract.checkpoints import require_dir

WHAT = "a faster-whisper (CTranslate2) model directory (model.bin, config.json, tokenizer.json)"
SAMPLE_RATE = 16000


class WhisperTranscriber:
    """faster-whisper `WhisperModel` loaded from `path` (never downloaded).

    VAD (Silero, shipped inside faster-whisper) drops silence before decoding; `language`
    None lets a multilingual model detect it (English-only `.en` models need nothing).
    `compute_type` "auto" picks int8 on CPU and float16 on CUDA.
    """

    name = "whisper"
    modality = "transcript"
    dim = None
    rate_hz = None
    sample_rate = SAMPLE_RATE

    def __init__(self, path: str | Path | None = None, device: str = "cpu", compute_type: str = "auto",
                 beam_size: int = 5, language: str | None = None, vad: bool = True, cpu_threads: int = 0,
                 **_: Any):
        p = require_dir(path, "whisper", WHAT)
        # lazy: an optional heavy dependency, only to transcribe
        from faster_whisper import WhisperModel

        dev = "cuda" if str(device).startswith("cuda") else "cpu"
        if compute_type == "auto":
            compute_type = "float16" if dev == "cuda" else "int8"
        self.model = WhisperModel(str(p), device=dev, compute_type=compute_type, cpu_threads=cpu_threads,
                                  local_files_only=True)
        self.beam_size, self.language, self.vad = beam_size, language, vad

    @staticmethod
    def probe_dim(path: str | Path | None = None, **_: Any) -> None:
        return None

    def transcribe(self, wave: np.ndarray) -> str:
        x = np.asarray(wave, np.float32)
        if x.size < SAMPLE_RATE // 10:  # under 0.1 s: nothing to say
            return ""
        segments, _ = self.model.transcribe(x, language=self.language, beam_size=self.beam_size,
                                            vad_filter=self.vad, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def encode(self, waves: list[np.ndarray]) -> list[str]:
        return [self.transcribe(w) for w in waves]
