"""Where a transcriber's `<id>.txt` files go, without overwriting files emi-ray did not write.

`--transcripts DIR` may be a folder the user keeps other transcripts in (their own, or a
dataset's `text/`). Each transcript written is recorded in DIR/.emi-ray-transcripts (one id a
line), so a re-run may rewrite its own files; an `<id>.txt` there that is not recorded is the
user's, and the extraction refuses, before any work, naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from emi_ray.data.layout import file_stem
from emi_ray.errors import InputError
from emi_ray.io import atomic_write_text

RECORD = ".emi-ray-transcripts"


class TranscriptDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._record = self.path / RECORD
        self._ours = self._read_record()

    def _read_record(self) -> set[str]:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--transcripts {self.path}: exists and is not a directory")
        try:
            return {ln.strip() for ln in self._record.read_text(errors="replace").splitlines() if ln.strip()}
        except FileNotFoundError:
            return set()
        except OSError as e:
            raise InputError(f"{self._record}: cannot read ({e.strerror})") from None

    def file(self, vid: int) -> Path:
        return self.path / f"{file_stem(vid)}.txt"

    def check(self, ids: Iterable[int]) -> None:
        """Refuse when a transcript of one of `ids` is already there and was not written by emi-ray."""
        for vid in ids:
            p = self.file(vid)
            if (p.exists() or p.is_symlink()) and file_stem(vid) not in self._ours:
                raise InputError(f"{p}: already there and not written by emi-ray extract; move it away or "
                                 f"choose another --transcripts directory")

    def write(self, vid: int, text: str) -> None:
        """Record first, then write: a crash between the two leaves a recorded id without a file (harmless)."""
        stem = file_stem(vid)
        if stem not in self._ours:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self._record, "a") as f:
                f.write(stem + "\n")
            self._ours.add(stem)
        atomic_write_text(self.file(vid), text + "\n")
