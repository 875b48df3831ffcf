"""Presets, per-modality overrides and the model-paths file: what `extract` will run.

`plan_extract(...)` turns a preset name plus overrides into a `Plan` (which encoder per
modality, with its local path and options, and the pipeline's knobs). `check_paths(plan)`
raises ONE `InputError` naming every missing local path, before anything is loaded.

Model paths file (`--models FILE`, YAML; relative paths are relative to the file):

```yaml
clip: /models/open_clip/ViT-B-16/open_clip_pytorch_model.bin   # or {path: ..., arch: ..., projection: false}
wav2vec2: /models/wav2vec2-large-960h                           # or {path: ..., layer: -1}
whisper: /models/faster-whisper-small                           # or {path: ..., language: en, beam_size: 5}
bert: /models/bert-base-uncased                                 # or {path: ..., pooling: cls}
wavlm: /models/wavlm-base-plus                                  # or {path: ..., layer: -1}; hubert likewise
text-lm: /models/Qwen2.5-0.5B                                   # or {path: ..., pooling: mean, max_tokens: 128}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emi_ray.errors import InputError
from emi_ray.extract.encoders import encoder_info, probe_dim
from emi_ray.io import read_yaml_mapping

MODALITY_SLOTS = ("video", "audio", "transcriber", "text")
PRESETS: dict[str, dict[str, Any]] = {
    # the paper: CLIP ViT-B/16 frames, wav2vec2 audio, Whisper transcripts encoded by BERT
    "paper": {"video": "clip", "audio": "wav2vec2", "transcriber": "whisper", "text": "bert",
              "decode_cpus": 1.0, "encoder_cpus": 1.0, "clips_per_task": 1},
    # weight-free, fast, for machines without checkpoints (and CI); text from text/<id>.txt
    "lite": {"video": "lite-video", "audio": "lite-audio", "transcriber": None, "text": "hash",
             "decode_cpus": 0.75, "encoder_cpus": 0.25, "clips_per_task": 16},
    # the leaderboard's encoders (10th ABAW runner-up: WavLM audio, LLM text features; CLIP stands in
    # for its EmoViT frames), Whisper transcripts
    "leaders": {"video": "clip", "audio": "wavlm", "transcriber": "whisper", "text": "text-lm",
                "decode_cpus": 1.0, "encoder_cpus": 1.0, "clips_per_task": 1},
}
LITE = {"video": "lite-video", "audio": "lite-audio", "text": "hash"}
SLOT_MODALITY = {"video": "video", "audio": "audio", "text": "text", "transcriber": "transcript"}
EXAMPLE = ("clip: /models/vit-b-16.bin, wav2vec2: /models/wav2vec2-large, whisper: /models/faster-whisper-small, "
           "bert: /models/bert-base")


@dataclass
class Choice:
    name: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        return {"path": self.path, **self.options}


@dataclass
class Plan:
    preset: str
    video: Choice | None = None
    audio: Choice | None = None
    transcriber: Choice | None = None
    text: Choice | None = None
    fps: float = 5.0
    max_seconds: float | None = None
    batch_size: int = 8  # clips per encoder call
    actors: int | None = None  # encoder actors; None: one per GPU, else 1
    decode_cpus: float = 1.0  # Ray CPUs per decode task
    encoder_cpus: float = 1.0  # Ray CPUs per encoder actor
    clips_per_task: int = 1  # clips per decode task (Ray Data block): more amortises per-task overhead
    chunk_seconds: float | None = 60.0  # video decoded and encoded in parts of this length (None: whole)
    fuse: bool | None = None  # decode+encode in the same tasks; None: when every encoder is weight-free
    inflight_mb: float | None = 512  # object-store budget for the pipeline's blocks (None: Ray's default)
    sample_rate: int = 16000

    def choices(self) -> dict[str, Choice]:
        return {s: c for s in MODALITY_SLOTS if (c := getattr(self, s)) is not None}


def load_models_file(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """{encoder: {"path": str | None, **options}} from a YAML file (see module doc)."""
    if path is None:
        return {}
    p = Path(path).expanduser()
    raw = read_yaml_mapping(p, InputError, "models file",
                            f"a mapping of encoder name to path, e.g. {EXAMPLE}")
    out: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        encoder_info(str(name))  # unknown names fail here, listing the known ones
        if isinstance(value, (str, Path)):
            entry: dict[str, Any] = {"path": str(value)}
        elif isinstance(value, dict):
            entry = dict(value)
        elif value is None:
            entry = {"path": None}
        else:
            raise InputError(f"{p}: {name}: expected a path or a mapping with path:, got {value!r}")
        if entry.get("path") is not None:
            q = Path(str(entry["path"])).expanduser()
            entry["path"] = str(q if q.is_absolute() else (p.parent / q))
        out[str(name)] = entry
    return out


def _choice(slot: str, name: str | None, models: dict[str, dict[str, Any]]) -> Choice | None:
    if name is None or name in ("none", ""):
        return None
    if name == "lite":
        if slot not in LITE:
            raise InputError(f"--{slot}: 'lite' is not a {slot}; use none or whisper")
        name = LITE[slot]
    info = encoder_info(name)
    want = SLOT_MODALITY[slot]
    if info.modality != want:
        raise InputError(f"encoder {name!r} is a {info.modality} encoder, not a {want} one")
    entry = dict(models.get(name, {}))
    path = entry.pop("path", None)
    return Choice(name, path, entry)


def plan_extract(preset: str, *, video: str | None = None, audio: str | None = None, text: str | None = None,
                 transcriber: str | None = None, models: dict[str, dict[str, Any]] | None = None,
                 **knobs: Any) -> Plan:
    """A preset with per-slot overrides (an encoder name, 'lite', or 'none') and knobs
    (fps, max_seconds, batch_size, actors, decode_cpus, encoder_cpus, clips_per_task, chunk_seconds, fuse,
    inflight_mb; None keeps the default)."""
    if preset not in PRESETS:
        raise InputError(f"--preset {preset!r}: available presets: {', '.join([*PRESETS, 'organiser'])}")
    base = PRESETS[preset]
    models = models or {}
    over = {"video": video, "audio": audio, "text": text, "transcriber": transcriber}
    plan = Plan(preset=preset)
    for slot in MODALITY_SLOTS:
        setattr(plan, slot, _choice(slot, over[slot] if over[slot] is not None else base[slot], models))
    defaults = {k: base[k] for k in ("decode_cpus", "encoder_cpus", "clips_per_task")}
    plan = replace(plan, **{**defaults, **{k: v for k, v in knobs.items() if v is not None}})
    if plan.transcriber is not None and plan.text is None:
        raise InputError("a transcriber needs a text encoder to embed its transcripts "
                         "(--text-encoder bert|text-lm|hash)")
    if plan.fps <= 0 or plan.batch_size < 1 or plan.clips_per_task < 1 or (plan.actors is not None
                                                                            and plan.actors < 1):
        raise InputError("--fps must be > 0, --batch-size and --actors >= 1")
    if plan.max_seconds is not None and plan.max_seconds <= 0:
        raise InputError("--max-seconds must be > 0")
    if plan.chunk_seconds is not None and plan.chunk_seconds <= 0:
        raise InputError("chunk_seconds must be > 0")
    if plan.decode_cpus <= 0 or plan.encoder_cpus <= 0:
        raise InputError("--decode-cpus and --encoder-cpus must be > 0")
    return plan


def check_paths(plan: Plan) -> None:
    """Raise one InputError naming every encoder whose local path is missing or wrong."""
    problems = []
    for c in plan.choices().values():
        info = encoder_info(c.name)
        if info.path is None:
            continue
        if c.path is None:
            problems.append(f"{c.name} ({info.what}): no path given")
            continue
        p = Path(c.path).expanduser()
        ok = p.exists() if info.path == "file" else p.is_dir()
        if not ok:
            problems.append(f"{c.name} ({info.what}): {p} {'not found' if not p.exists() else 'is not a directory'}")
    if problems:
        raise InputError(
            f"--preset {plan.preset} needs local model files (no model hub is used); missing: "
            + "; ".join(problems)
            + f". Give the paths in a YAML file passed as --models FILE ({_example(plan)}), "
              "or use weight-free encoders (--preset lite, or e.g. --video-encoder lite)")


def _example(plan: Plan) -> str:
    """A models file for `plan`'s encoders that need a path, in one line."""
    named = [c.name for c in plan.choices().values() if encoder_info(c.name).path is not None]
    return ", ".join(f"{n}: /models/{n}" for n in named) or EXAMPLE


def modality_entries(plan: Plan, with_text: bool) -> dict[str, dict[str, Any]]:
    """The store manifest's modalities {name: {encoder, dim, rate_hz}}, from configs only."""
    out: dict[str, dict[str, Any]] = {}
    if plan.video is not None:
        out["video"] = {"encoder": plan.video.name, "dim": probe_dim(plan.video.name, **plan.video.kwargs()),
                        "rate_hz": float(plan.fps)}
    if plan.audio is not None:
        rate = encoder_info(plan.audio.name).load_class().probe_rate(**plan.audio.kwargs())
        out["audio"] = {"encoder": plan.audio.name, "dim": probe_dim(plan.audio.name, **plan.audio.kwargs()),
                        "rate_hz": float(rate)}
    if plan.text is not None and with_text:
        name = plan.text.name if plan.transcriber is None else f"{plan.transcriber.name}+{plan.text.name}"
        out["text"] = {"encoder": name, "dim": probe_dim(plan.text.name, **plan.text.kwargs()), "rate_hz": None}
    return out


def video_input_size(plan: Plan) -> int | None:
    if plan.video is None:
        return None
    cls = encoder_info(plan.video.name).load_class()
    return int(cls.probe_input_size(**plan.video.kwargs()))
