"""Reading a public corpus' folder as untrusted input: a relative path from an annotation file
must stay inside its folder, a file must be a regular one inside it (no symlink out, no FIFO)
under the size cap, text must be UTF-8, an image must decode. Every refusal is a reason
string for the conversion's skip counts, never an exception for one bad row."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path, PurePosixPath

import av
import numpy as np

from emi_ray.align.corpus import CorpusError
from emi_ray.data.layout import decode_utf8
from emi_ray.data.untrusted_files import file_problem, read_capped
from emi_ray.errors import EmiError

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # a video name that is one plain path part


class Refused(Exception):
    """One source file or row is unusable: `reason` is the skip count's key, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def check_relative(rel: str) -> str:
    """`rel`, a relative path from an annotation file, or Refused when it could leave its folder
    (absolute, '..', a drive or a backslash path, a NUL)."""
    rel = rel.strip()
    parts = PurePosixPath(rel).parts
    if (not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or ":" in (parts[0] if parts else "")
            or any(p in ("..", ".") for p in parts)):
        raise Refused("path outside the source folder", f"{rel!r}: not a plain relative path (no '..', not absolute)")
    return rel


def relative_inside(root: Path, rel: str) -> Path:
    """root/rel for a relative path from an annotation file (`check_relative`), or Refused."""
    return root.joinpath(*PurePosixPath(check_relative(rel)).parts)


def read_source(path: Path, root: Path, limit: int) -> bytes:
    """The bytes of a regular file inside `root` (real paths), at most `limit`, or Refused."""
    if not path.exists() and not path.is_symlink():
        raise Refused("missing file", f"{path}: not found")
    why = file_problem(path, os.path.realpath(root), limit)
    if why is not None:
        raise Refused("refused file", why)
    try:
        return read_capped(path, limit, root=root, error=CorpusError)
    except EmiError as e:
        raise Refused("refused file", str(e)) from None


def annotation_text(path: Path, root: Path, limit: int, what: str) -> str:
    """The UTF-8 text (a byte-order mark dropped) of an annotation file inside `root`, or a
    CorpusError naming it: a missing, refused or binary annotation file is a wrong folder, not one
    bad row."""
    try:
        data = read_source(path, root, limit)
    except Refused as r:
        raise CorpusError(f"{r} ({what})") from None
    return decode_utf8(data, path, CorpusError, "is this the right annotation file?")


def decode_image(data: bytes, where: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an encoded image (jpg, png, ...), or Refused."""
    try:
        with av.open(io.BytesIO(data)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration, IndexError, ValueError) as e:
        raise Refused("undecodable image", f"{where}: cannot decode as an image ({e})") from None
