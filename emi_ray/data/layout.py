"""Read a Hume-Vidmimic2 directory: split CSVs, ids, and which files exist per id.

Layout (the challenge's distribution): `train_split.csv`, `valid_split.csv` with header
`Filename,Admiration,...,Joy`; integer ids; files named with the id zero-padded to 5
digits in `raw/` (.mp4), `audio/` (.mp3), `vit/` and `wav2vec2/` (.pkl), `text/` (.txt).
Test ids are the ids that have files but appear in neither CSV.

The folder is untrusted input (a download, someone else's tarball). `read_layout` takes
only regular files whose real path lies inside the dataset folder (no symlink that leaves
it, no FIFO, device, socket or directory), named by an id of ASCII digits, each at most
`max_file_mb` MB; every other file that names an id is a `FileProblem` (one line each, for
errors.csv) and the run goes on without it. Two files naming one id (`12.pkl`,
`00012.pkl`) are refused with both names. `read_capped` reads one such file with the same
rules at read time (a file swapped for a FIFO after the scan cannot hang a reader).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emi_ray import EMOTIONS
from emi_ray.data.untrusted_files import (
    DEFAULT_MAX_FILE_MB,
    file_problem,
    max_bytes,
    read_capped,
)
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
MAX_ID_DIGITS = 18  # ids are stored as int64: 18 digits always fit
_ID = re.compile(r"[0-9]{1,%d}" % MAX_ID_DIGITS)  # ASCII digits only (str.isdigit() takes '²', '٣')


def file_stem(vid: int) -> str:
    return f"{vid:05d}"


def parse_id(text: str) -> int | None:
    """The id spelled by `text` (ASCII digits, at most 18), else None."""
    return int(text) if _ID.fullmatch(text) else None


@dataclass(frozen=True)
class FileProblem:
    """A file the scan refused: `vid` is None when its name is not an id."""

    folder: str
    vid: int | None
    path: Path
    message: str  # starts with the path

    def error_row(self) -> dict[str, str]:
        return {"id": "" if self.vid is None else str(self.vid), "stage": "scan", "file": str(self.path),
                "message": self.message}


@dataclass
class Dataset:
    root: Path
    labels: dict[int, np.ndarray]  # id -> (6,) float32, train and valid only
    split_of: dict[int, str]  # id -> train | valid | test
    files: dict[str, dict[int, Path]] = field(default_factory=dict)  # folder -> id -> path
    problems: list[FileProblem] = field(default_factory=list)  # files refused by the scan
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 2**20  # the per-file cap readers apply too
    _by_vid: dict | None = field(default=None, repr=False, compare=False)

    def ids(self, split: str | None = None) -> list[int]:
        return sorted(i for i, s in self.split_of.items() if split is None or s == split)

    def path(self, folder: str, vid: int) -> Path | None:
        return self.files.get(folder, {}).get(vid)

    def sources(self, vid: int) -> list[str]:
        return [f for f in SOURCES if vid in self.files.get(f, {})]

    def problems_of(self, vid: int, folders: tuple[str, ...] | list[str] | None = None) -> list[FileProblem]:
        """The refused files of `vid` (in `folders`, if given)."""
        if self._by_vid is None:
            self._by_vid = {}
            for p in self.problems:
                self._by_vid.setdefault(p.vid, []).append(p)
        return [p for p in self._by_vid.get(vid, ()) if folders is None or p.folder in folders]


def _show(value: str, width: int = 40) -> str:
    """`value` for a one-line message: repr, cut to about `width` characters."""
    return repr(value if len(value) <= width else value[:width] + "...")


def csv_rows(path: Path, error: type[Exception] = LayoutError, what: str = "CSV",
             limit: int = DEFAULT_MAX_FILE_MB * 2**20, root: str | Path | None = None) -> list[list[str]]:
    """The rows of a CSV file, or `error` naming the file (and line): not found, not a regular
    file, outside `root` (when given), over `limit`, not UTF-8 (a UTF-8 byte-order mark is
    accepted and dropped), a field over the csv module's limit (128 KiB), or a malformed quote."""
    data = read_capped(path, limit, root=root, error=error, what=what)
    text = decode_utf8(data, path, error, f"save the {what} as UTF-8")
    return [row for _, row in parse_csv(text, path, error)]


def decode_utf8(data: bytes, path: Path, error: type[Exception], advice: str) -> str:
    """`data` as UTF-8 text (a byte-order mark dropped: Excel's "CSV UTF-8" starts with one), or
    `error` naming the file, the line and the byte, then `advice`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                    f"{advice}") from None


def parse_csv(text: str, path: Path, error: type[Exception]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV row of `text`, the header first, streamed; a malformed
    quote or a field over the csv module's limit ends it with `error` naming the line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as e:
        raise error(f"{path}:{reader.line_num}: not a valid CSV row ({e})") from None


def read_emotion_csv(path: Path, error: type[Exception] = LayoutError, labels: bool = True,
                     root: str | Path | None = None) -> dict[int, np.ndarray]:
    """Parse a CSV in the label/submission format: `Filename` + six emotions.

    Every problem raises `error` naming the file and row. Labels must lie in [0, 1];
    predictions (labels=False) need only be finite numbers. Ids are ASCII digits.
    `root`: a dataset folder the file must not leave (through a symlink).
    """
    what = "split CSV" if labels else "predictions file"
    path = Path(path)
    rows = csv_rows(path, error, what, root=root)
    if not rows:
        raise error(f"{path}: empty file (expected header {','.join(HEADER)})")
    header = [h.strip() for h in rows[0]]
    missing = [h for h in HEADER if h not in header]
    unknown = [h if len(h) <= 40 else h[:40] + "..." for h in header if h not in HEADER]
    twice = sorted({h for h in header if h in HEADER and header.count(h) > 1})
    if missing or unknown or twice:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unknown:
            parts.append(f"unknown column(s) {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        if twice:
            parts.append(f"column(s) {twice} more than once")
        raise error(f"{path}: {'; '.join(parts)}; expected header {','.join(HEADER)}")
    col = [header.index(h) for h in HEADER]
    out: dict[int, np.ndarray] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise error(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
        raw_id = row[col[0]].strip()
        vid = parse_id(raw_id)
        if vid is None:
            raise error(f"{path}:{line_no}: Filename {_show(raw_id)} is not an integer id "
                        f"(ASCII digits 0-9, at most {MAX_ID_DIGITS})")
        if vid in out:
            raise error(f"{path}:{line_no}: duplicate id {vid}")
        values = []
        for name, c in zip(EMOTIONS, col[1:]):
            try:
                v = float(row[c])
            except ValueError:
                raise error(f"{path}:{line_no}: {name}={_show(row[c])} is not a number") from None
            if labels and (math.isnan(v) or not 0.0 <= v <= 1.0):
                raise error(f"{path}:{line_no}: {name}={row[c].strip()[:40]} outside [0, 1] (id {vid})")
            if not math.isfinite(v):
                raise error(f"{path}:{line_no}: {name}={row[c].strip()[:40]} is NaN or infinite (id {vid})")
            values.append(v)
        out[vid] = np.asarray(values, dtype=np.float32)
    if not out:
        raise error(f"{path}: no rows (empty {'split' if labels else 'file'})")
    return out


def read_split_csv(path: Path, root: str | Path | None = None) -> dict[int, np.ndarray]:
    return read_emotion_csv(path, LayoutError, labels=True, root=root)


def _looks_like_id(stem: str) -> bool:
    """A name of digits that are not all ASCII ('٠٠١٢', '0012²', full-width digits)."""
    return stem.isnumeric() and not stem.isascii()


def _scan(root: Path, limit: int) -> tuple[dict[str, dict[int, Path]], list[FileProblem]]:
    """folder -> id -> path of every acceptable file, and the refused ones (see the module doc)."""
    real_root = os.path.realpath(root)
    files: dict[str, dict[int, Path]] = {}
    problems: list[FileProblem] = []
    for folder, suffix in SOURCES.items():
        d = root / folder
        if not d.is_dir():
            continue
        try:
            names = sorted(e.name for e in os.scandir(d))
        except OSError as e:
            problems.append(FileProblem(folder, None, d, f"{d}: cannot list ({e.strerror})"))
            continue
        found: dict[int, Path] = {}
        named: dict[int, list[str]] = {}
        for name in names:
            stem = name[: -len(suffix)] if name.endswith(suffix) else ""
            if not stem:
                continue
            p = d / name
            vid = parse_id(stem)
            if vid is None:
                if _looks_like_id(stem) or (stem.isdigit() and stem.isascii()):
                    problems.append(FileProblem(folder, None, p, f"{p}: the name is not an id: ids are ASCII "
                                                f"digits 0-9, at most {MAX_ID_DIGITS} (e.g. 00012{suffix})"))
                continue
            named.setdefault(vid, []).append(name)
            why = file_problem(p, real_root, limit)
            if why:
                problems.append(FileProblem(folder, vid, p, why))
            else:
                found[vid] = p
        clashes = [(vid, ns) for vid, ns in named.items() if len(ns) > 1]
        if clashes:
            shown = "; ".join(f"{' and '.join(ns)} both name id {vid}" for vid, ns in clashes[:5])
            raise LayoutError(f"{d}: {shown}{' ...' if len(clashes) > 5 else ''}; keep one file per id "
                              f"(ids are compared as numbers)")
        files[folder] = found
    return files, problems


def read_layout(root: str | Path, max_file_mb: float | None = None) -> Dataset:
    """Read both split CSVs and scan the media/feature folders (files over `max_file_mb` MB,
    default DEFAULT_MAX_FILE_MB, and other refused files are in `problems`)."""
    root = Path(root)
    limit = max_bytes(max_file_mb)
    if not root.is_dir():
        raise LayoutError(f"{root}: dataset directory not found")
    train = read_split_csv(root / "train_split.csv", root)
    valid = read_split_csv(root / "valid_split.csv", root)
    both = sorted(set(train) & set(valid))
    if both:
        raise LayoutError(
            f"{root}: id(s) {both[:10]} appear in both train_split.csv and valid_split.csv"
        )
    files, problems = _scan(root, limit)
    if not files:
        raise LayoutError(f"{root}: none of the folders {list(SOURCES)} exist")
    with_files = set().union(*(set(f) for f in files.values()), {p.vid for p in problems if p.vid is not None})
    split_of = {i: "train" for i in train} | {i: "valid" for i in valid}
    for vid in sorted(with_files - set(split_of)):
        split_of[vid] = "test"
    no_files = sorted(set(split_of) - with_files)
    if no_files:
        shown = ", ".join(map(str, no_files[:20])) + (" ..." if len(no_files) > 20 else "")
        warnings.warn(f"{root}: {len(no_files)} CSV id(s) have no files: {shown}", stacklevel=2)
    return Dataset(root=root, labels=train | valid, split_of=split_of, files=files, problems=problems,
                   max_file_bytes=limit)
