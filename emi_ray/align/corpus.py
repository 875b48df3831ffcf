"""The affect corpus for stage I: a directory with `affect.csv` and the media it names.

```
CORPUS/
  affect.csv        one row per face image or voice clip (columns below)
  images/*.png      face images (any format PyAV decodes: png, jpg, ...)
  audio/*.wav       voice clips (any format PyAV decodes; resampled to 16 kHz mono)
```
Columns (AffectNet / Aff-Wild2 shaped; header required, order free):

| column        | required | meaning                                                        |
|---------------|----------|----------------------------------------------------------------|
| path          | yes      | file relative to CORPUS                                        |
| modality      | yes      | vision (face image) or audio (voice clip)                      |
| expression    | yes      | Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt, Other |
| intensity     | no       | Low / Medium / High, or a number in [0, 1]; empty = left out   |
| aus           | no       | active FACS action units, e.g. "6;12" or "AU6;AU12"            |
| valence       | yes      | in [-1, 1] (the mean over raters when rater columns exist)     |
| arousal       | yes      | in [-1, 1]                                                     |
| split         | no       | train or valid; absent: a seeded 80/20 split by path           |
| valence_<k>, arousal_<k> | no | per-rater values (k = 1, 2, ...; empty cells allowed): the  |
|               |          | confidence weight w_i of eq. (2) comes from their spread       |

Confidence weight: s_i = mean of std(valence raters) and std(arousal raters);
w_i = 1 / (1 + (s_i / 0.2)^2), so agreeing raters give ~1 and s = 0.2 gives 0.5. Rows
with fewer than two raters get w_i = 1.
"""

from __future__ import annotations

import csv
import io
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
MODALITY_ALIASES = {"vision": "vision", "image": "vision", "video": "vision", "face": "vision",
                    "audio": "audio", "voice": "audio"}
WEIGHT_SCALE = 0.2
VALID_FRACTION = 0.2


class CorpusError(EmiError):
    """An affect corpus directory or its affect.csv is malformed."""


@dataclass
class AffectItem:
    path: str  # relative to the corpus dir
    modality: str  # vision | audio
    expression: str
    intensity: str | None
    aus: list[int]
    valence: float
    arousal: float
    split: str  # train | valid
    raters_valence: list[float] = field(default_factory=list)
    raters_arousal: list[float] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        return build_prompt(self.expression, self.intensity, self.aus, self.valence, self.arousal)

    @property
    def va_std(self) -> float | None:
        if len(self.raters_valence) < 2 and len(self.raters_arousal) < 2:
            return None
        stds = [float(np.std(r)) for r in (self.raters_valence, self.raters_arousal) if len(r) >= 2]
        return float(np.mean(stds))

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


def _float(row: dict, key: str, where: str, lo: float = -1.0, hi: float = 1.0) -> float:
    raw = (row.get(key) or "").strip()
    try:
        v = float(raw)
    except ValueError:
        raise CorpusError(f"{where}: {key} {raw!r} is not a number") from None
    if not np.isfinite(v) or not lo <= v <= hi:
        raise CorpusError(f"{where}: {key}={v} outside [{lo}, {hi}]")
    return v


def _split_of(path: str) -> str:
    return "valid" if (zlib.crc32(path.encode()) % 1000) / 1000 < VALID_FRACTION else "train"


def load_corpus(root: str | Path, check_files: bool = True) -> AffectCorpus:
    """Read and validate CORPUS/affect.csv; errors name the file and the row (CSV line number)."""
    root = Path(root)
    csv_path = root / MANIFEST
    if not root.is_dir():
        raise CorpusError(f"{root}: affect corpus directory not found (make one: emi-ray synth-affect {root})")
    if not csv_path.is_file():
        raise CorpusError(f"{csv_path}: not found; an affect corpus needs {MANIFEST} with columns "
                          f"{', '.join(REQUIRED)} (see docs/stage1.md)")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CorpusError(f"{csv_path}: header lacks column(s) {missing}; "
                              f"required: {', '.join(REQUIRED)}")
        v_raters = sorted(h for h in header if h.startswith("valence_"))
        a_raters = sorted(h for h in header if h.startswith("arousal_"))
        items = []
        seen: dict[str, int] = {}
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
            mod = MODALITY_ALIASES.get(row["modality"].strip().lower())
            if mod is None:
                raise CorpusError(f"{where}: modality {row['modality']!r}; use vision or audio")
            if check_files and not (root / path).is_file():
                raise CorpusError(f"{where}: file {root / path} not found")
            expr = row["expression"].strip()
            if not expr:
                raise CorpusError(f"{where}: empty expression")
            try:
                level = intensity_level(row.get("intensity"))
                aus = parse_aus(row.get("aus") or "")
            except InputError as e:
                raise CorpusError(f"{where}: {e}") from None
            val = _float(row, "valence", where)
            aro = _float(row, "arousal", where)
            rv = [_float(row, c, where) for c in v_raters if (row.get(c) or "").strip()]
            ra = [_float(row, c, where) for c in a_raters if (row.get(c) or "").strip()]
            split = (row.get("split") or "").strip().lower() or _split_of(path)
            if split not in ("train", "valid"):
                raise CorpusError(f"{where}: split {split!r}; use train or valid (or leave it empty)")
            items.append(AffectItem(path, mod, normalise_expression(expr), level, aus, val, aro, split, rv, ra))
    if not items:
        raise CorpusError(f"{csv_path}: no rows")
    return AffectCorpus(root, items)


def write_manifest(root: str | Path, items: list[AffectItem], raters: int = 0) -> Path:
    """Write CORPUS/affect.csv (atomically) for `items`, with `raters` per-rater column pairs."""
    cols = ["path", "modality", "expression", "intensity", "aus", "valence", "arousal", "split"]
    cols += [f"{d}_{k}" for k in range(1, raters + 1) for d in ("valence", "arousal")]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for it in items:
        row = [it.path, it.modality, it.expression, it.intensity or "", ";".join(map(str, it.aus)),
               f"{it.valence:.2f}", f"{it.arousal:.2f}", it.split]
        for k in range(raters):
            row.append(f"{it.raters_valence[k]:.3f}" if k < len(it.raters_valence) else "")
            row.append(f"{it.raters_arousal[k]:.3f}" if k < len(it.raters_arousal) else "")
        w.writerow(row)
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
