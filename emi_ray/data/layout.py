"""Read a Hume-Vidmimic2 directory: split CSVs, ids, and which files exist per id.

Layout (the challenge's distribution): `train_split.csv`, `valid_split.csv` with header
`Filename,Admiration,...,Joy`; integer ids; files named with the id zero-padded to 5
digits in `raw/` (.mp4), `audio/` (.mp3), `vit/` and `wav2vec2/` (.pkl), `text/` (.txt).
Test ids are the ids that have files but appear in neither CSV.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emi_ray import EMOTIONS
from emi_ray.errors import LayoutError

HEADER = ["Filename", *EMOTIONS]
SOURCES = {  # folder -> file suffix
    "raw": ".mp4",
    "audio": ".mp3",
    "vit": ".pkl",
    "wav2vec2": ".pkl",
    "text": ".txt",
}
SPLITS = ("train", "valid", "test")


def file_stem(vid: int) -> str:
    return f"{vid:05d}"


@dataclass
class Dataset:
    root: Path
    labels: dict[int, np.ndarray]  # id -> (6,) float32, train and valid only
    split_of: dict[int, str]  # id -> train | valid | test
    files: dict[str, dict[int, Path]] = field(default_factory=dict)  # folder -> id -> path

    def ids(self, split: str | None = None) -> list[int]:
        return sorted(i for i, s in self.split_of.items() if split is None or s == split)

    def path(self, folder: str, vid: int) -> Path | None:
        return self.files.get(folder, {}).get(vid)

    def sources(self, vid: int) -> list[str]:
        return [f for f in SOURCES if vid in self.files.get(f, {})]


def read_emotion_csv(path: Path, error: type[Exception] = LayoutError, labels: bool = True
                     ) -> dict[int, np.ndarray]:
    """Parse a CSV in the label/submission format: `Filename` + six emotions.

    Every problem raises `error` naming the file and row. Labels must lie in [0, 1];
    predictions (labels=False) need only be finite numbers.
    """
    what = "split CSV" if labels else "predictions file"
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise error(f"{path}: empty file (expected header {','.join(HEADER)})")
    header = [h.strip() for h in rows[0]]
    missing = [h for h in HEADER if h not in header]
    unknown = [h for h in header if h not in HEADER]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unknown:
            parts.append(f"unknown column(s) {unknown}")
        raise error(f"{path}: {'; '.join(parts)}; expected header {','.join(HEADER)}")
    col = [header.index(h) for h in HEADER]
    out: dict[int, np.ndarray] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise error(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
        raw_id = row[col[0]].strip()
        try:
            vid = int(raw_id)
        except ValueError:
            raise error(f"{path}:{line_no}: Filename {raw_id!r} is not an integer id") from None
        if vid in out:
            raise error(f"{path}:{line_no}: duplicate id {vid}")
        values = []
        for name, c in zip(EMOTIONS, col[1:]):
            try:
                v = float(row[c])
            except ValueError:
                raise error(f"{path}:{line_no}: {name}={row[c]!r} is not a number") from None
            if labels and (math.isnan(v) or not 0.0 <= v <= 1.0):
                raise error(f"{path}:{line_no}: {name}={row[c]} outside [0, 1] (id {vid})")
            if not math.isfinite(v):
                raise error(f"{path}:{line_no}: {name}={row[c]} is NaN or infinite (id {vid})")
            values.append(v)
        out[vid] = np.asarray(values, dtype=np.float32)
    if not out:
        raise error(f"{path}: no rows (empty {'split' if labels else 'file'})")
    return out


def read_split_csv(path: Path) -> dict[int, np.ndarray]:
    return read_emotion_csv(path, LayoutError, labels=True)


def _scan(root: Path) -> dict[str, dict[int, Path]]:
    files: dict[str, dict[int, Path]] = {}
    for folder, suffix in SOURCES.items():
        d = root / folder
        if not d.is_dir():
            continue
        found: dict[int, Path] = {}
        for p in d.iterdir():
            if p.suffix == suffix and p.stem.isdigit():
                found[int(p.stem)] = p
        files[folder] = found
    return files


def read_layout(root: str | Path) -> Dataset:
    """Read both split CSVs and scan the media/feature folders."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: dataset directory not found")
    train = read_split_csv(root / "train_split.csv")
    valid = read_split_csv(root / "valid_split.csv")
    both = sorted(set(train) & set(valid))
    if both:
        raise LayoutError(
            f"{root}: id(s) {both[:10]} appear in both train_split.csv and valid_split.csv"
        )
    files = _scan(root)
    if not files:
        raise LayoutError(f"{root}: none of the folders {list(SOURCES)} exist")
    with_files = set().union(*(set(f) for f in files.values()))
    split_of = {i: "train" for i in train} | {i: "valid" for i in valid}
    for vid in sorted(with_files - set(split_of)):
        split_of[vid] = "test"
    no_files = sorted(set(split_of) - with_files)
    if no_files:
        shown = ", ".join(map(str, no_files[:20])) + (" ..." if len(no_files) > 20 else "")
        warnings.warn(f"{root}: {len(no_files)} CSV id(s) have no files: {shown}", stacklevel=2)
    return Dataset(root=root, labels=train | valid, split_of=split_of, files=files)
