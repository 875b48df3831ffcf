"""`ExtractRequest`: what one extraction asks for, as `emi-ray extract`'s options give it.

Standard library only: the CLI builds one before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ORGANISER = "organiser"  # the preset that imports the organisers' pickles; every other one reads media


@dataclass
class ExtractRequest:
    """An extraction: `preset` (organiser, lite, paper) and its overrides (None: the preset's).

    The organiser preset imports vit/wav2vec2 pickles and text; it takes only `text_encoder`,
    `text_model`, `skip_bad`, `command` and `progress` (the media-only fields must stay None).
    `models`: YAML of local model paths; `text_model`: a BERT directory (overrides its path).
    `transcripts`: where the transcriber writes <id>.txt (default: OUT/text; required when
    OUT is a URI). `address`: the Ray cluster to join. `skip_bad`: store a clip whose files
    failed, with those modalities missing. `command`: the command line the store records.
    `progress(done, total)`: called with (0, None) once every check passed and the work
    starts, then as clips finish. `force`: write into a folder that is neither empty nor a
    store (nothing there is deleted). `max_file_mb`: the cap per input file (None: 2048)."""

    preset: str = ORGANISER
    video_encoder: str | None = None
    audio_encoder: str | None = None
    text_encoder: str | None = None
    transcriber: str | None = None
    models: str | Path | None = None
    text_model: str | Path | None = None
    fps: float = 5.0
    max_seconds: float | None = None
    batch_size: int = 8
    actors: int | None = None
    encoder_cpus: float | None = None
    decode_cpus: float | None = None
    transcripts: str | Path | None = None
    address: str | None = None
    skip_bad: bool = False
    command: str = ""
    progress: Callable[[int, int | None], None] | None = None
    force: bool = False
    max_file_mb: float | None = None

    def media_only(self) -> dict[str, object]:
        """The fields only the media presets take, by their `emi-ray extract` option."""
        return {"--video-encoder": self.video_encoder, "--audio-encoder": self.audio_encoder,
                "--transcriber": self.transcriber, "--models": self.models, "--actors": self.actors,
                "--encoder-cpus": self.encoder_cpus, "--decode-cpus": self.decode_cpus,
                "--max-seconds": self.max_seconds}
