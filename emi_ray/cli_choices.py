"""The CLI's fixed choices (str Enums: `--help` lists them, a bad value is a usage error, exit 2),
the `--space` type, and the app's group class, which prints a usage error as one line.

Light on purpose: the CLI imports this at start, so it imports nothing beyond typer.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from typer import BadParameter, Exit, echo, style
from typer.core import TyperGroup

# click's UsageError, whichever click Typer uses (recent Typer vendors its own copy)
UsageError = next(c for c in BadParameter.__mro__ if c.__name__ == "UsageError")


class Preset(StrEnum):
    organiser = "organiser"
    lite = "lite"
    paper = "paper"
    leaders = "leaders"


class VideoEncoder(StrEnum):
    clip = "clip"
    lite = "lite"
    none = "none"


class AudioEncoder(StrEnum):
    wav2vec2 = "wav2vec2"
    wavlm = "wavlm"
    hubert = "hubert"
    lite = "lite"
    none = "none"


class TextEncoder(StrEnum):
    bert = "bert"
    text_lm = "text-lm"
    hash = "hash"
    none = "none"


class Transcriber(StrEnum):
    whisper = "whisper"
    none = "none"


class StageVideoEncoder(StrEnum):  # stage I: frozen encoders only, no `none`
    lite = "lite"
    clip = "clip"


class StageAudioEncoder(StrEnum):
    lite = "lite"
    wav2vec2 = "wav2vec2"


class StageTextEncoder(StrEnum):
    hash = "hash"
    bert = "bert"


class Split(StrEnum):
    train = "train"
    valid = "valid"
    test = "test"


class Modality(StrEnum):
    both = "both"
    vision = "vision"
    audio = "audio"


class CorpusSplit(StrEnum):  # `corpus affectnet --split`
    auto = "auto"
    train = "train"
    valid = "valid"


class AblationTable(StrEnum):
    both = "both"
    modules = "modules"
    modalities = "modalities"
    architectures = "architectures"


def value(choice: StrEnum | None) -> str | None:
    """The plain string of a choice (what the library takes and files record)."""
    return None if choice is None else str(choice.value)


def space_names() -> list[str]:
    """The named search spaces, read the way `emi_ray.tune.spaces.available_spaces` does
    ($EMI_RAY_SPACES, else the package's search_spaces/) without importing Optuna."""
    env = os.environ.get("EMI_RAY_SPACES")
    d = Path(env) if env else Path(__file__).resolve().parent / "search_spaces"
    return [p.stem for p in sorted(d.glob("*.yaml"))] if d.is_dir() else []


def space_metavar() -> str:
    return "[" + "|".join([*space_names(), "FILE.yaml"]) + "]"


def parse_space(v: str) -> str:
    """`--space`: a named search space (listed in --help) or a path to a YAML file (its contents are
    checked where it is loaded, one line naming the file)."""
    s = str(v)
    if s in space_names() or s.endswith((".yaml", ".yml")) or os.sep in s or Path(s).expanduser().is_file():
        return s
    raise BadParameter(f"{s!r} is not a search space ({', '.join(space_names()) or 'none found'}) or a YAML file")


def complete_space(incomplete: str) -> list[str]:
    return [n for n in space_names() if n.startswith(incomplete)]


class Group(TyperGroup):
    """The app's group: a usage error (bad option, bad choice, missing argument) prints one line,
    `error: ...`, like the library's errors, and exits 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as e:
            _usage_error(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as e:
            _usage_error(e)


def _usage_error(e) -> None:
    if type(e).__name__ == "NoArgsIsHelpError":  # `emi-ray` alone: the help, as Typer shows it
        raise e
    where = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
    message = " ".join(e.format_message().replace("Value error, ", "").split())
    echo(f"{style('error:', fg='red')} {message}{where}", err=True)
    raise Exit(e.exit_code)


class Sampler(StrEnum):  # for a `tune --sampler` option (SearchRequest.sampler)
    tpe = "tpe"
    random = "random"
