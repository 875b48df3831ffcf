"""Reading one file of an untrusted folder: only a regular file whose real path lies inside the
folder (no symlink that leaves it, no FIFO, device, socket or directory), at most a size cap,
opened without blocking and checked on what was opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from emi_ray.errors import InputError, LayoutError

DEFAULT_MAX_FILE_MB = 2048  # per input file (media, pickle, transcript, CSV); --max-file-mb


def max_bytes(max_file_mb: float | None) -> int:
    """The per-file cap in bytes of `max_file_mb` (None: the default)."""
    mb = DEFAULT_MAX_FILE_MB if max_file_mb is None else max_file_mb
    if not mb > 0:
        raise LayoutError(f"--max-file-mb must be > 0, got {max_file_mb}")
    return int(mb * 2**20)


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "an unknown kind of file"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _outside_message(path: Path, root: str | Path) -> str | None:
    """Why `path` is refused as leaving the dataset `root` (a real path), or None."""
    real = os.path.realpath(path)
    if _inside(real, str(root)):
        return None
    return f"{path}: a symbolic link to {real}, outside the dataset folder {root}; refused"


def file_problem(path: Path, real_root: str | Path | None, limit: int) -> str | None:
    """Why the scan refuses `path` (one line starting with the path), or None: not inside
    `real_root` once symlinks are resolved, not a regular file, or over `limit` bytes."""
    if real_root is not None:
        why = _outside_message(path, real_root)
        if why:
            return why
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: {'a broken symbolic link' if os.path.islink(path) else 'vanished while scanning'}"
    except OSError as e:
        return f"{path}: cannot read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: {_kind(st.st_mode)}, not a regular file; refused"
    if st.st_size > limit:
        return f"{path}: {st.st_size} bytes, over the {_mb(limit)} limit per file (--max-file-mb)"
    return None


def read_capped(path: str | Path, limit: int = DEFAULT_MAX_FILE_MB * 2**20, root: str | Path | None = None,
                error: type[Exception] = InputError, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them, or `error` naming the file.

    Opens without blocking (a FIFO cannot hang it), checks what was opened (fstat: a file
    swapped after a scan is still caught), never reads more than `limit` + 1 bytes (a device
    or a growing file cannot fill memory). `root`: refuse a path that resolves outside it."""
    p = Path(path)
    if root is not None:
        why = _outside_message(p, os.path.realpath(root))
        if why:
            raise error(why)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as e:
        raise error(f"{p}: cannot read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise error(f"{p}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):  # checked on what was opened: a swap after a scan is caught
        os.close(fd)
        raise error(f"{p}: {_kind(st.st_mode)}, not a regular file; refused")
    with os.fdopen(fd, "rb", buffering=0) as f:
        if st.st_size > limit:
            raise error(f"{p}: {st.st_size} bytes, over the {_mb(limit)} limit per input file")
        chunks, total, want = [], 0, st.st_size + 1
        try:
            while True:  # a regular file's size, then on (it grew, or a /proc-like file): never past the cap
                chunk = f.read(want)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise error(f"{p}: over the {_mb(limit)} limit per input file")
                want = min(1 << 20, limit + 1 - total)
        except OSError as e:
            raise error(f"{p}: cannot read ({e.strerror})") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
