"""Guarding a feature store's directory: durable (fsynced) writes, refusing to turn a folder of
other files into a store, and the one-writer lock. Used by the store's writer and by `extract`."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from emi_ray.errors import StoreError
from emi_ray.io import atomic_write_bytes, exists, held_alone, is_dir, join, location

MANIFEST = "manifest.json"
ERRORS = "errors.csv"
LOCK = ".extract.lock"
_SHARD_TEMP = re.compile(r"\.[a-z]+-.*\.tmp")  # what _write_shard's (and earlier versions') temp files look like
_ROOT_TEMP = re.compile(r"\.(manifest\.json|errors\.csv)\..*\.tmp")  # atomic_write_* temp files


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def durable_write_bytes(path: str | Path, data: bytes) -> None:
    """`atomic_write_bytes`, and locally fsynced before the rename replaces anything."""
    loc = location(path)
    if isinstance(loc, str):
        atomic_write_bytes(loc, data)
        return
    loc.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=loc.parent, prefix=f".{loc.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, loc)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(loc.parent)


def _ours(p: Path) -> bool:
    """A name an unfinished store of ours may hold before its manifest exists."""
    if p.name == LOCK or _ROOT_TEMP.fullmatch(p.name):
        return True
    if p.name == "shards" and p.is_dir() and not p.is_symlink():
        return all(_SHARD_TEMP.fullmatch(q.name) for q in p.iterdir())
    return False


def check_target(root: str | Path, force: bool = False, ours: Callable[[str], bool] = lambda _name: False) -> None:
    """Refuse to make `root` a store when it holds something else: a file; or a folder that is
    neither empty nor a store (no manifest.json) unless `force`; with `force`, still refuse one
    holding an errors.csv (extract would replace or delete it). `ours(name)`: more entry names the
    caller made there (e.g. the raw store inside an aligned one)."""
    loc = location(root)
    if isinstance(loc, str):  # an object store: any object under the prefix is "not empty"
        if exists(join(loc, MANIFEST)) or not is_dir(loc):
            return
        if not force:
            raise StoreError(f"{loc}: not a feature store (no {MANIFEST}) and not empty; choose a new --out, "
                             f"or pass --force to add a store there")
        if exists(join(loc, ERRORS)):
            raise StoreError(f"{join(loc, ERRORS)}: already there and not written by emi-ray extract; move it "
                             f"away or choose a new --out")
        return
    if loc.is_symlink() and not loc.exists():
        raise StoreError(f"{loc}: a broken symbolic link; choose a new --out")
    if loc.exists() and not loc.is_dir():
        raise StoreError(f"{loc}: exists and is not a directory; choose a new --out")
    if not loc.is_dir() or (loc / MANIFEST).exists():
        return
    try:
        other = sorted(p.name for p in loc.iterdir() if not (_ours(p) or ours(p.name)))
    except OSError as e:
        raise StoreError(f"{loc}: cannot list ({e.strerror})") from None
    if not other:
        return
    shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
    if not force:
        raise StoreError(f"{loc}: not a feature store (no {MANIFEST}) and not empty ({shown}); choose a new --out, "
                         f"or pass --force to add a store there (nothing in it is deleted)")
    if (loc / ERRORS).exists() or (loc / ERRORS).is_symlink():
        raise StoreError(f"{loc / ERRORS}: already there and not written by emi-ray extract; move it away or "
                         f"choose a new --out")


def store_lock(root: str | Path):
    """The store's writer lock for the block (a local store; an object store has none), or at
    once a StoreError naming who holds it (pid, host, start time)."""
    loc = location(root)
    if isinstance(loc, str):
        return contextlib.nullcontext()
    if loc.exists() and not loc.is_dir():
        raise StoreError(f"{loc}: exists and is not a directory; choose a new --out")
    return held_alone(loc / LOCK, f"the feature store {loc} (another `emi-ray extract` is writing it)", StoreError)
