"""AffectNet's annotation CSV (training.csv / validation.csv) -> face crops + affect rows.

Header `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,
valence,arousal`; the path is relative to the image folder; expression codes 0 Neutral, 1 Happy,
2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None, 9 Uncertain, 10 No-Face;
valence/arousal in [-1, 1], -2 = invalid. Rows with codes 8-10, invalid VA, a bad face box, a
path leaving the image folder, or an image that is missing or does not decode are skipped and
counted. The face box crops the image; the crop is written as OUT/images/affectnet/<path>.png.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from emi_ray.align.corpus import AffectItem, CorpusError, default_split, write_png
from emi_ray.align.sources.inputs import (Refused, annotation_text, check_relative, decode_image, read_source,
                                          relative_inside)
from emi_ray.align.sources.writer import ConversionResult, Tally, claim_target, convert
from emi_ray.data.layout import parse_csv
from emi_ray.data.untrusted_files import max_bytes

FORMAT = "affectnet"
HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal")
EXPRESSIONS = {0: "Neutral", 1: "Happy", 2: "Sad", 3: "Surprise", 4: "Fear", 5: "Disgust", 6: "Anger",
               7: "Contempt"}
NOT_AN_EXPRESSION = {8: "expression 8 (None)", 9: "expression 9 (Uncertain)", 10: "expression 10 (No-Face)"}
INVALID_VA = -2.0


@dataclass(frozen=True)
class _Face:
    where: str  # "training.csv:17", for messages
    image: str  # subDirectory_filePath
    box: tuple[int, int, int, int]  # x, y, width, height
    expression: str
    valence: float
    arousal: float


def _number(text: str, name: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise Refused("non-numeric value", f"{where}: {name} {text.strip()[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise Refused("non-numeric value", f"{where}: {name} {text.strip()[:40]!r} is not finite")
    return v


def _face(row: list[str], col: dict[str, int], where: str) -> _Face:
    """One annotation row, or Refused (the reason is the skip count's key)."""
    if len(row) != len(col):
        raise Refused("malformed row", f"{where}: {len(row)} fields, expected {len(col)}")

    def get(name: str) -> str:
        return row[col[name]]

    code = _number(get("expression"), "expression", where)
    if code in NOT_AN_EXPRESSION:
        raise Refused(NOT_AN_EXPRESSION[int(code)], f"{where}: expression {int(code)} is not an emotion")
    if code not in EXPRESSIONS:
        raise Refused("unknown expression code", f"{where}: expression {get('expression')!r}; AffectNet codes are 0-10")
    va = [_number(get(k), k, where) for k in ("valence", "arousal")]
    if any(v == INVALID_VA or not -1.0 <= v <= 1.0 for v in va):
        raise Refused("invalid valence/arousal", f"{where}: valence {va[0]}, arousal {va[1]} (-2 = invalid)")
    box = tuple(int(_number(get(k), k, where)) for k in ("face_x", "face_y", "face_width", "face_height"))
    if box[2] <= 0 or box[3] <= 0:
        raise Refused("bad face box", f"{where}: face box {box} has no area")
    try:
        image = check_relative(get("subDirectory_filePath"))
    except Refused as r:
        raise Refused(r.reason, f"{where}: {r}") from None
    return _Face(where, image, box, EXPRESSIONS[int(code)], va[0], va[1])


def _columns(first: list[str], csv_path: Path) -> dict[str, int]:
    header = [h.strip() for h in first]
    missing = [h for h in HEADER if h not in header]
    if missing:
        raise CorpusError(f"{csv_path}: header lacks column(s) {missing}; an AffectNet annotation CSV has "
                          f"{','.join(HEADER)}")
    return {h: header.index(h) for h in HEADER}


def read_annotations(csv_path: Path, limit: int, tally: Tally) -> list[_Face]:
    """The usable rows of the CSV; the others counted in `tally`."""
    text = annotation_text(csv_path, csv_path.parent, limit, "AffectNet's training.csv or validation.csv")
    records = parse_csv(text, csv_path, CorpusError)
    col = _columns(next(records, (1, []))[1], csv_path)
    faces, seen = [], {}
    for line, row in records:
        if not any(c.strip() for c in row):
            continue
        try:
            face = _face(row, col, f"{csv_path.name}:{line}")
        except Refused as r:
            tally.skip(r.reason, str(r))
            continue
        if face.image in seen:  # one crop file per image
            tally.skip("repeated image", f"{face.where}: {face.image} is also row {seen[face.image]}")
            continue
        seen[face.image] = face.where
        faces.append(face)
    return faces


def _image(images: Path, face: _Face, limit: int):
    """(path, bytes) of the row's image, or Refused naming the CSV line."""
    try:
        src = relative_inside(images, face.image)
        return src, read_source(src, images, limit)
    except Refused as r:
        raise Refused({"missing file": "missing image"}.get(r.reason, r.reason), f"{face.where}: {r}") from None


def _crop_maker(images: Path, out: Path, split: str | None, limit: int):
    def make(face: _Face) -> AffectItem:
        rel = Path("images", FORMAT, face.image).with_suffix(".png").as_posix()  # face.image: checked relative
        if not (out / rel).is_file():  # made by an earlier run: resume
            src, data = _image(images, face, limit)
            img = decode_image(data, f"{face.where}: {src}")
            x, y, w, h = face.box
            x0, y0, x1, y1 = max(0, x), max(0, y), min(img.shape[1], x + w), min(img.shape[0], y + h)
            if x1 <= x0 or y1 <= y0:
                raise Refused("face box outside the image", f"{face.where}: box {face.box} outside the "
                                                            f"{img.shape[1]}x{img.shape[0]} image {src}")
            write_png(out / rel, img[y0:y1, x0:x1])
        return AffectItem(rel, "vision", face.expression, None, [], face.valence, face.arousal,
                          split or default_split(rel))
    return make


def convert_affectnet(csv_path: str | Path, images: str | Path, out: str | Path, split: str | None = None,
                      force: bool = False, max_file_mb: float | None = None, workers: int = 4,
                      progress=None) -> ConversionResult:
    """AffectNet rows of `csv_path` with images under `images` -> the affect corpus OUT.
    `split`: train or valid for every row (None: the corpus reader's seeded split by path)."""
    csv_path, images, out = Path(csv_path), Path(images), Path(out)
    if split not in (None, "train", "valid"):
        raise CorpusError(f"--split {split!r}: use train or valid (or leave it out)")
    if not images.is_dir():
        raise CorpusError(f"{images}: image folder not found (--images: the folder the CSV's "
                          f"subDirectory_filePath is relative to)")
    limit = max_bytes(max_file_mb)
    tally = Tally()
    faces = read_annotations(csv_path, limit, tally)
    claim_target(out, [csv_path.parent, images], force)
    options = {"images": str(images.resolve()), "split": split}
    return convert(out, FORMAT, csv_path, faces, _crop_maker(images, out, split, limit), tally, options,
                   workers, progress)
