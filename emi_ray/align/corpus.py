"""The affect corpus for stage I: a directory with `affect.csv` and the media it names.

```
CORPUS/
  affect.csv        one row per face image or voice clip (columns below)
  images/*.png      face images (any format PyAV decodes: png, jpg, ...)
  audio/*.wav       voice clips (any format PyAV decodes: wav, mp3, ...; resampled to 16 kHz mono)
```
Columns (AffectNet / Aff-Wild2 shaped; header required, order free):

| column        | required | meaning                                                        |
|---------------|----------|----------------------------------------------------------------|
| path          | yes      | file relative to CORPUS                                        |
| modality      | yes      | vision (face image) or audio (voice clip)                      |
| expression    | yes*     | Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt, Other |
| intensity     | no       | Low / Medium / High, or a number in [0, 1]; empty = left out   |
| aus           | no       | active FACS action units, e.g. "6;12" or "AU6;AU12"            |
| valence       | yes*     | in [-1, 1] (the mean over raters when rater columns exist)     |
| arousal       | yes*     | in [-1, 1]                                                     |
| prompt        | no       | the text to align with, used as is (default: eq. (1) built from the row) |
| split         | no       | train or valid; absent: a seeded 80/20 split by path           |
| valence_<k>, arousal_<k> | no | per-rater values (k = 1, 2, ...; empty cells allowed)      |
| valence_sd, arousal_sd   | no | std of valence/arousal over the frames the row stands for (in [0, 2]) |

*A row with a non-empty `prompt` may leave them empty (a header with a `prompt` column may omit
valence and arousal).

Confidence weight w_i of eq. (2). The paper says only that "w_i are determined by VA value
standard deviations"; which standard deviation, and the mapping below, are ours:
s_i = the mean of the valence and arousal spreads that exist, taken from
  1. the raters (`weight_source` "raters"): std over the rater columns, each dimension with
     at least two raters; else
  2. the frames (`weight_source` "frames"): `valence_sd` / `arousal_sd`, e.g. the std of
     Aff-Wild2's per-frame VA over the window a row stands for; else
  3. nothing (`weight_source` "none"): w_i = 1, the weighting is a no-op for that row.
w_i = 1 / (1 + (s_i / 0.2)^2): agreeing raters (or steady frames) give ~1, s = 0.2 gives 0.5.
`weight_summary(items)` says how many rows got their weight from each source.
"""

from __future__ import annotations

import csv
import io
import re
import wave
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from emi_ray.align.prompts import build_prompt, intensity_level, normalise_expression, parse_aus
from emi_ray.errors import EmiError, InputError
from emi_ray.io import atomic_path, atomic_write_text

MANIFEST = "affect.csv"
REQUIRED = ("path", "modality", "expression", "valence", "arousal")
OPTIONAL_WITH_PROMPT = ("valence", "arousal")  # a header with a prompt column may leave these out
MODALITY_ALIASES = {"vision": "vision", "image": "vision", "video": "vision", "face": "vision",
                    "audio": "audio", "voice": "audio"}
WEIGHT_SCALE = 0.2
VALID_FRACTION = 0.2
WEIGHT_SOURCES = ("raters", "frames", "none")
_RATER = re.compile(r"(valence|arousal)_[0-9]+")


class CorpusError(EmiError):
    """An affect corpus directory or its affect.csv is malformed."""


@dataclass
class AffectItem:
    path: str  # relative to the corpus dir
    modality: str  # vision | audio
    expression: str  # "" only with prompt_text
    intensity: str | None
    aus: list[int]
    valence: float | None  # None only with prompt_text
    arousal: float | None
    split: str  # train | valid
    raters_valence: list[float] = field(default_factory=list)
    raters_arousal: list[float] = field(default_factory=list)
    prompt_text: str | None = None  # the `prompt` column: used as is
    valence_sd: float | None = None  # spread over the frames the row stands for
    arousal_sd: float | None = None

    @property
    def prompt(self) -> str:
        if self.prompt_text:
            return self.prompt_text
        return build_prompt(self.expression, self.intensity, self.aus, self.valence, self.arousal)

    @property
    def weight_source(self) -> str:
        """Where `weight` comes from: raters, frames or none (then the weight is 1)."""
        if len(self.raters_valence) >= 2 or len(self.raters_arousal) >= 2:
            return "raters"
        if self.valence_sd is not None or self.arousal_sd is not None:
            return "frames"
        return "none"

    @property
    def va_std(self) -> float | None:
        """s_i: the mean spread of valence and arousal from `weight_source` (None: no spread)."""
        spreads = {"raters": [float(np.std(r)) for r in (self.raters_valence, self.raters_arousal) if len(r) >= 2],
                   "frames": [s for s in (self.valence_sd, self.arousal_sd) if s is not None]}
        stds = spreads.get(self.weight_source)
        return float(np.mean(stds)) if stds else None

    @property
    def weight(self) -> float:
        s = self.va_std
        return 1.0 if s is None else 1.0 / (1.0 + (s / WEIGHT_SCALE) ** 2)


@dataclass
class AffectCorpus:
    root: Path
    items: list[AffectItem]

    def of(self, modality: str, split: str | None = None) -> list[AffectItem]:
        return [i for i in self.items if i.modality == modality and (split is None or i.split == split)]

    @property
    def modalities(self) -> list[str]:
        return [m for m in ("vision", "audio") if any(i.modality == m for i in self.items)]


def weight_summary(items: list[AffectItem]) -> dict:
    """{"sources": {raters|frames|none: rows}, "mean", "min", "max"} of the items' weights: a corpus
    whose rows all come from "none" trains unweighted whatever stage1.weighted says."""
    w = np.array([it.weight for it in items], np.float64)
    sources = {s: 0 for s in WEIGHT_SOURCES}
    for it in items:
        sources[it.weight_source] += 1
    return {"sources": sources, **{k: round(float(f(w)), 4) if w.size else None
                                   for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))}}


def _float(row: dict, key: str, where: str, lo: float = -1.0, hi: float = 1.0) -> float:
    raw = (row.get(key) or "").strip()
    try:
        v = float(raw)
    except ValueError:
        raise CorpusError(f"{where}: {key} {raw!r} is not a number") from None
    if not np.isfinite(v) or not lo <= v <= hi:
        raise CorpusError(f"{where}: {key}={v} outside [{lo}, {hi}]")
    return v


def _optional(row: dict, key: str, where: str, lo: float = -1.0, hi: float = 1.0) -> float | None:
    return _float(row, key, where, lo, hi) if (row.get(key) or "").strip() else None  # empty: absent


def default_split(path: str) -> str:
    """The seeded 80/20 split of a row without one (by its path)."""
    return "valid" if (zlib.crc32(path.encode()) % 1000) / 1000 < VALID_FRACTION else "train"


def _check_header(csv_path: Path, header: list[str]) -> None:
    need = [c for c in REQUIRED if "prompt" not in header or c not in OPTIONAL_WITH_PROMPT]
    missing = [c for c in need if c not in header]
    if missing:
        raise CorpusError(f"{csv_path}: header lacks column(s) {missing}; required: {', '.join(REQUIRED)} "
                          f"(valence and arousal may be left out with a prompt column)")


def _item(row: dict, where: str, raters: tuple[list[str], list[str]]) -> AffectItem:
    """One validated row (its path and modality already checked by the caller)."""
    prompt = (row.get("prompt") or "").strip() or None
    expr = row["expression"].strip()
    try:
        level = intensity_level(row.get("intensity"))
        aus = parse_aus(row.get("aus") or "")
    except InputError as e:
        raise CorpusError(f"{where}: {e}") from None
    val, aro = _optional(row, "valence", where), _optional(row, "arousal", where)
    if prompt is None:
        if not expr:
            raise CorpusError(f"{where}: empty expression (give one, or a prompt)")
        if val is None or aro is None:
            raise CorpusError(f"{where}: {'valence' if val is None else 'arousal'} is empty; give valence and "
                              f"arousal, or a prompt")
    rv = [_float(row, c, where) for c in raters[0] if (row.get(c) or "").strip()]
    ra = [_float(row, c, where) for c in raters[1] if (row.get(c) or "").strip()]
    split = (row.get("split") or "").strip().lower() or default_split(row["path"].strip())
    if split not in ("train", "valid"):
        raise CorpusError(f"{where}: split {split!r}; use train or valid (or leave it empty)")
    return AffectItem(row["path"].strip(), MODALITY_ALIASES[row["modality"].strip().lower()],
                      normalise_expression(expr) if expr else "", level, aus, val, aro, split, rv, ra, prompt,
                      _optional(row, "valence_sd", where, 0.0, 2.0), _optional(row, "arousal_sd", where, 0.0, 2.0))


def read_manifest(csv_path: str | Path, root: str | Path | None = None, check_files: bool = True) -> list[AffectItem]:
    """The validated rows of an affect.csv-format file (media checked under `root`, default its folder);
    errors name the file and the row (CSV line number)."""
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        _check_header(csv_path, header)
        raters = tuple(sorted(h for h in header if _RATER.fullmatch(h) and h.startswith(d))
                       for d in ("valence", "arousal"))
        items, seen = [], {}
        for row in reader:
            line = reader.line_num
            where = f"{csv_path}: row {line}"
            row = {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in row.items()}
            path = row["path"].strip()
            if not path:
                raise CorpusError(f"{where}: empty path")
            if path in seen:
                raise CorpusError(f"{where}: path {path!r} repeats row {seen[path]}")
            seen[path] = line
            if row["modality"].strip().lower() not in MODALITY_ALIASES:
                raise CorpusError(f"{where}: modality {row['modality']!r}; use vision or audio")
            if check_files and not (root / path).is_file():
                raise CorpusError(f"{where}: file {root / path} not found")
            items.append(_item(row, where, raters))
    return items


def load_corpus(root: str | Path, check_files: bool = True) -> AffectCorpus:
    """Read and validate CORPUS/affect.csv; errors name the file and the row (CSV line number)."""
    root = Path(root)
    csv_path = root / MANIFEST
    if not root.is_dir():
        raise CorpusError(f"{root}: affect corpus directory not found (make one: emi-ray synth-affect {root}, "
                          f"or convert a public corpus: emi-ray corpus --help)")
    if not csv_path.is_file():
        raise CorpusError(f"{csv_path}: not found; an affect corpus needs {MANIFEST} with columns "
                          f"{', '.join(REQUIRED)} (see docs/stage1.md)")
    items = read_manifest(csv_path, root, check_files)
    if not items:
        raise CorpusError(f"{csv_path}: no rows")
    return AffectCorpus(root, items)


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _cells(it: AffectItem, raters: int, extras: list[str]) -> list[str]:
    row = [it.path, it.modality, it.expression, it.intensity or "", ";".join(map(str, it.aus)),
           _num(it.valence, ".2f"), _num(it.arousal, ".2f"), it.split]
    for k in range(raters):
        row.append(f"{it.raters_valence[k]:.3f}" if k < len(it.raters_valence) else "")
        row.append(f"{it.raters_arousal[k]:.3f}" if k < len(it.raters_arousal) else "")
    extra = {"prompt": it.prompt_text or "", "valence_sd": _num(it.valence_sd, ".4f"),
             "arousal_sd": _num(it.arousal_sd, ".4f")}
    return row + [extra[c] for c in extras]


def write_manifest(root: str | Path, items: list[AffectItem], raters: int = 0) -> Path:
    """Write CORPUS/affect.csv (atomically) for `items`, with `raters` per-rater column pairs (and the
    prompt / valence_sd / arousal_sd columns where an item has them)."""
    cols = ["path", "modality", "expression", "intensity", "aus", "valence", "arousal", "split"]
    cols += [f"{d}_{k}" for k in range(1, raters + 1) for d in ("valence", "arousal")]
    extras = [c for c, attr in (("prompt", "prompt_text"), ("valence_sd", "valence_sd"), ("arousal_sd", "arousal_sd"))
              if any(getattr(it, attr) is not None for it in items)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols + extras)
    for it in items:
        w.writerow(_cells(it, raters, extras))
    path = Path(root) / MANIFEST
    atomic_write_text(path, buf.getvalue())
    return path


def read_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB from an image file (PyAV decodes png/jpg/...)."""
    try:
        with av.open(str(path)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration) as e:
        raise CorpusError(f"{path}: cannot decode as an image ({e})") from None


def write_png(path: str | Path, img: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="image2") as o:
            s = o.add_stream("png")
            s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "rgb24"
            o.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
            o.mux(s.encode(None))


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(pcm.tobytes())
