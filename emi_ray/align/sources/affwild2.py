"""Aff-Wild2 (ABAW) per-video annotation files + cropped-aligned frames -> affect rows.

```
ANNOTATIONS/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt    valence,arousal     -5 = invalid
ANNOTATIONS/EXPR_Recognition_Challenge/{Train_Set,Validation_Set}/<video>.txt
            Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other  (one class index per frame, -1 = invalid)
ANNOTATIONS/AU_Detection_Challenge/{Train_Set,Validation_Set}/<video>.txt
            AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26        (0/1 per frame, -1 = invalid)
FRAMES/<video>/<i:05d>.jpg    frame i = line i after the header (1-based)
```
One row per kept frame (`every`: frame 1, 1+N, 1+2N, ...), labelled with what is valid at that
frame (expression, active AUs, valence/arousal); a frame with nothing valid is skipped. The row
stands for its N frames: `valence_sd`/`arousal_sd` are the std of the valid VA over frames
i..i+N-1 (at least two), the source of its confidence weight. Train_Set rows are train,
Validation_Set rows valid. Frames are copied (after a decode check) to
OUT/images/affwild2/<video>/<i:05d>.jpg.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emi_ray.align.corpus import AffectItem, CorpusError
from emi_ray.align.prompts import au_phrase, build_prompt, parse_aus
from emi_ray.align.sources.inputs import SAFE_NAME, Refused, annotation_text, decode_image, read_source
from emi_ray.align.sources.writer import ConversionResult, Tally, claim_target, convert
from emi_ray.data.untrusted_files import max_bytes
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_bytes

FORMAT = "affwild2"
TASKS = {"VA": ("VA_Estimation_Challenge",), "EXPR": ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge"),
         "AU": ("AU_Detection_Challenge",)}
SETS = {"Train_Set": "train", "Validation_Set": "valid"}
VA_HEADER = ["valence", "arousal"]
EXPR_HEADER = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]


@dataclass
class _Video:
    split: str
    values: dict[str, list] = field(default_factory=dict)  # task -> per frame: a value, None (invalid) or Refused


@dataclass(frozen=True)
class _Frame:
    video: str
    index: int  # 1-based
    split: str
    expression: str | None
    aus: tuple[int, ...] | None
    va: tuple[float, float] | None
    va_sd: tuple[float, float] | None


def _va(line: str):
    v = [float(x) for x in line.split(",")]
    if len(v) != 2 or not all(np.isfinite(v)):
        raise ValueError(line)
    return None if any(x == -5 or not -1 <= x <= 1 for x in v) else (v[0], v[1])


def _expr(line: str):
    k = int(line.strip())
    if not -1 <= k < len(EXPR_HEADER):
        raise ValueError(line)
    return None if k == -1 else EXPR_HEADER[k]


def _au_parser(header: list[str]):
    codes = parse_aus(";".join(header))
    if len(codes) != len(header):
        raise CorpusError(f"AU header {','.join(header)}: repeated AUs")

    def parse(line: str):
        v = [int(x) for x in line.split(",")]
        if len(v) != len(codes) or any(x not in (-1, 0, 1) for x in v):
            raise ValueError(line)
        return None if -1 in v else tuple(c for c, x in zip(codes, v) if x == 1)
    return parse


def _parser(task: str, header: list[str], path: Path):
    want = {"VA": VA_HEADER, "EXPR": EXPR_HEADER}.get(task)
    if want is not None and [h.lower() for h in header] != [h.lower() for h in want]:
        raise CorpusError(f"{path}: header {','.join(header)[:80]!r}, expected {','.join(want)}")
    try:
        return {"VA": _va, "EXPR": _expr}.get(task) or _au_parser(header)
    except EmiError as e:
        raise CorpusError(f"{path}: {e}") from None


def _values(task: str, path: Path, root: Path, limit: int) -> list:
    """Per frame of one annotation file: its value, None (marked invalid) or a Refused (unparsable)."""
    lines = annotation_text(path, root, limit, f"an Aff-Wild2 {task} file").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    parse = _parser(task, [h.strip() for h in (lines[0] if lines else "").split(",")], path)
    out = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            out.append(parse(line))
        except ValueError:
            out.append(Refused("unparsable annotation line", f"{path}:{i}: {line.strip()[:60]!r}"))
    return out


def _videos(root: Path, limit: int, tally: Tally) -> dict[str, _Video]:
    """Every video's annotation tracks; a refused or malformed file is counted (per file)."""
    videos: dict[str, _Video] = {}
    for task, dirs in TASKS.items():
        for folder in (root / d / s for d in dirs for s in SETS):
            if not folder.is_dir():
                continue
            for name in sorted(e.name for e in os.scandir(folder) if e.name.endswith(".txt")):
                video = name[:-4]
                if not SAFE_NAME.fullmatch(video):
                    tally.skip("unsafe video name (files)", f"{folder / name}: not a plain video name")
                    continue
                try:
                    values = _values(task, folder / name, root, limit)
                except CorpusError as e:
                    tally.skip("refused annotation file (files)", str(e))
                    continue
                videos.setdefault(video, _Video(SETS[folder.name])).values[task] = values
    if not videos and not tally.skipped:
        raise CorpusError(f"{root}: no annotation files; expected {TASKS['VA'][0]}/, {TASKS['EXPR'][0]}/ or "
                          f"{TASKS['AU'][0]}/ with Train_Set/ and Validation_Set/ of <video>.txt")
    return videos


def _spread(va: list, start: int, n: int) -> tuple[float, float] | None:
    window = [v for v in va[start : start + n] if isinstance(v, tuple)]
    return tuple(float(x) for x in np.std(np.array(window), axis=0)) if len(window) >= 2 else None


def _frames(name: str, video: _Video, every: int, tally: Tally) -> list[_Frame]:
    n = max(len(v) for v in video.values.values())
    va = video.values.get("VA", [])
    frames = []
    for i in range(1, n + 1, every):
        got = {t: v[i - 1] if i <= len(v) else None for t, v in video.values.items()}
        bad = next((v for v in got.values() if isinstance(v, Refused)), None)
        if bad is not None:
            tally.skip(bad.reason, str(bad))
        elif all(v is None for v in got.values()):
            tally.skip("no valid annotation", f"{name} frame {i}: every annotation is marked invalid")
        else:
            frames.append(_Frame(name, i, video.split, got.get("EXPR"), got.get("AU"), got.get("VA"),
                                 _spread(va, i - 1, every) if got.get("VA") else None))
    return frames


def _prompt(f: _Frame) -> str | None:
    """The eq. (1) prompt when a part is missing (None: the reader builds it from the columns)."""
    if f.expression and f.va:
        return None
    if f.expression:
        return build_prompt(f.expression, None, f.aus or [])
    parts = [au_phrase(f.aus or []), f"Valence={f.va[0]:.2f}, Arousal={f.va[1]:.2f}" if f.va else ""]
    return ", ".join(p for p in parts if p)


def _frame_maker(frames_root: Path, out: Path, limit: int):
    def make(f: _Frame) -> AffectItem:
        rel = f"images/{FORMAT}/{f.video}/{f.index:05d}.jpg"
        if not (out / rel).is_file():  # made by an earlier run: resume
            src = frames_root / f.video / f"{f.index:05d}.jpg"
            try:
                data = read_source(src, frames_root, limit)
                decode_image(data, str(src))
            except Refused as r:
                raise Refused({"missing file": "missing frame image"}.get(r.reason, r.reason), str(r)) from None
            atomic_write_bytes(out / rel, data)
        va, sd = f.va or (None, None), f.va_sd or (None, None)
        return AffectItem(rel, "vision", f.expression or "", None, list(f.aus or []), va[0], va[1], f.split,
                          prompt_text=_prompt(f), valence_sd=sd[0], arousal_sd=sd[1])
    return make


def convert_affwild2(annotations: str | Path, frames: str | Path, out: str | Path, every: int = 10,
                     force: bool = False, max_file_mb: float | None = None, workers: int = 4,
                     progress=None) -> ConversionResult:
    """Aff-Wild2's annotation folders under `annotations` and its cropped_aligned `frames` -> OUT."""
    annotations, frames, out = Path(annotations), Path(frames), Path(out)
    if every < 1:
        raise CorpusError(f"--every {every}: must be >= 1 (1 = every frame)")
    for d, what in ((annotations, "annotation folder (holding VA_Estimation_Challenge/, ...)"),
                    (frames, "frame folder (cropped_aligned/, holding <video>/<i:05d>.jpg)")):
        if not d.is_dir():
            raise CorpusError(f"{d}: {what} not found")
    limit = max_bytes(max_file_mb)
    tally = Tally()
    jobs = [f for name, v in sorted(_videos(annotations, limit, tally).items()) for f in _frames(name, v, every, tally)]
    claim_target(out, [annotations, frames], force)
    return convert(out, FORMAT, annotations, jobs, _frame_maker(frames, out, limit), tally,
                   {"frames": str(frames.resolve()), "every": every}, workers, progress)
