"""Local model paths: every encoder loads from disk; a missing path is one clear error."""

from __future__ import annotations

from pathlib import Path

from emi_ray.errors import InputError


def _require(path: str | Path | None, encoder: str, what: str, want_dir: bool) -> Path:
    if path is None:
        raise InputError(f"encoder {encoder!r} needs a local path: {what} (no model hub is used)")
    p = Path(path).expanduser()
    if want_dir and not p.is_dir():
        raise InputError(f"encoder {encoder!r}: {p} is not a directory ({what})")
    if not want_dir and not p.is_file():
        raise InputError(f"encoder {encoder!r}: {p} not found ({what})")
    return p


def require_dir(path: str | Path | None, encoder: str, what: str) -> Path:
    return _require(path, encoder, what, want_dir=True)


def require_file(path: str | Path | None, encoder: str, what: str) -> Path:
    return _require(path, encoder, what, want_dir=False)
