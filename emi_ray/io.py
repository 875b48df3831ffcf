"""Small file helpers: atomic writes, where outputs land (EMI_RAY_HOME), and URIs.

A location is a local path or a URI that pyarrow's filesystems open (`s3://bucket/prefix`;
credentials, region and `AWS_ENDPOINT_URL` come from the standard AWS environment variables
and the instance role). Local locations stay `Path`s, URIs stay `str`s (a `Path` would fold
the `//`).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import yaml
from pyarrow import fs


def home() -> Path:
    """Root of emi-ray's outputs: $EMI_RAY_HOME, default ~/.emi-ray."""
    return Path(os.environ.get("EMI_RAY_HOME", "~/.emi-ray")).expanduser()


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def is_uri(path: str | Path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def location(path: str | Path) -> str | Path:
    """A URI as is, anything else as a local Path."""
    return str(path) if is_uri(path) else Path(str(path).removeprefix("file://")).expanduser()


def resolved(path: str | Path) -> str | Path:
    """A URI as is, a local path made absolute (what a run records, so it still holds from another cwd)."""
    loc = location(path)
    return loc if isinstance(loc, str) else loc.resolve()


def join(root: str | Path, *parts: str) -> str | Path:
    root = location(root)
    return "/".join([root.rstrip("/"), *parts]) if isinstance(root, str) else root.joinpath(*parts)


def filesystem(path: str | Path):
    """(pyarrow FileSystem, path inside it) of a location."""
    loc = location(path)
    if isinstance(loc, str):
        return fs.FileSystem.from_uri(loc)
    return fs.LocalFileSystem(), str(loc.absolute())


def exists(path: str | Path) -> bool:
    fsys, p = filesystem(path)
    return fsys.get_file_info(p).type == fs.FileType.File


def read_bytes(path: str | Path) -> bytes:
    fsys, p = filesystem(path)
    with fsys.open_input_stream(p) as f:
        return f.read()


def list_files(directory: str | Path, pattern: str = "*") -> list[str | Path]:
    """Files directly in `directory` whose names match `pattern`, sorted; [] if it does not exist."""
    d = location(directory)
    if isinstance(d, Path):
        return sorted(p for p in d.glob(pattern) if p.is_file())
    fsys, p = filesystem(d)
    infos = fsys.get_file_info(fs.FileSelector(p, allow_not_found=True))
    return sorted(join(d, i.base_name) for i in infos
                  if i.type == fs.FileType.File and fnmatch.fnmatchcase(i.base_name, pattern))


def is_dir(path: str | Path) -> bool:
    """Is there a directory (on an object store: any object under the prefix) at `path`?"""
    loc = location(path)
    if isinstance(loc, Path):
        return loc.is_dir()
    fsys, p = filesystem(loc)
    if fsys.get_file_info(p).type == fs.FileType.Directory:
        return True
    return bool(fsys.get_file_info(fs.FileSelector(p, allow_not_found=True)))


def remove_tree(path: str | Path) -> None:
    """Delete a directory and everything under it, if it exists."""
    loc = location(path)
    if isinstance(loc, Path):
        shutil.rmtree(loc, ignore_errors=True)
    elif is_dir(loc):
        fsys, p = filesystem(loc)
        fsys.delete_dir(p)


def upload_file(src: str | Path, dest: str | Path) -> None:
    """Copy a local file to a location (one PUT on an object store)."""
    atomic_write_bytes(dest, Path(src).read_bytes())


def remove_file(path: str | Path) -> None:
    """Delete a file if it exists."""
    if exists(path):
        fsys, p = filesystem(path)
        fsys.delete_file(p)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    if is_uri(path):  # one object PUT: readers see the old object or the whole new one
        fsys, p = filesystem(path)
        with fsys.open_output_stream(p) as f:
            f.write(data)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_path(path: str | Path):
    """Context manager yielding a temp path beside `path`, renamed onto it on success."""
    @contextlib.contextmanager
    def _cm():
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    return _cm()


def atomic_output(path: str | Path):
    """Context manager yielding (pyarrow FileSystem, path in it) to write `path` in one piece: locally a temp
    file renamed onto `path` on success, on an object store the object itself (a PUT is all or nothing)."""
    @contextlib.contextmanager
    def _cm():
        if is_uri(path):
            yield filesystem(path)
            return
        with atomic_path(path) as tmp:
            yield fs.LocalFileSystem(), str(tmp)

    return _cm()


MAX_YAML_NODES = 100_000  # values once aliases are expanded: a config or search space has hundreds


def _expanded_size(obj, memo: dict[int, int]) -> int:
    """How many values `obj` holds with every shared (aliased) list or mapping counted each time it appears."""
    if not isinstance(obj, (list, dict)):
        return 1
    if id(obj) not in memo:
        memo[id(obj)] = 0  # a cycle counts once
        items = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        memo[id(obj)] = 1 + sum(_expanded_size(x, memo) for x in items)
    return memo[id(obj)]


def load_yaml(text: str):
    """yaml.safe_load, refusing a document that expands past MAX_YAML_NODES values: 576 bytes of
    nested aliases ("billion laughs") load as shared references but grow without bound once walked
    (validated, copied, dumped). Errors are yaml.YAMLError."""
    data = yaml.safe_load(text)
    size = _expanded_size(data, {})
    if size > MAX_YAML_NODES:
        raise yaml.YAMLError(f"expands to {size} values through its aliases (*name), over {MAX_YAML_NODES}; refused")
    return data


def read_yaml_mapping(path: str | Path, error: type[Exception], what: str, expected: str) -> dict:
    """A YAML file that must hold a mapping; every problem is one `error` naming the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise error(f"{p}: {what} not found")
    try:
        data = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected {expected}")
    return data


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on `path` (a lock file) held for the block: one builder at a time,
    across processes (Tune trials building the same cached result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def held_alone(path: Path, what: str, error: type[Exception]):
    """An exclusive lock on `path` for the block, or at once `error` naming who holds it: for work
    that must never run twice at the same time (two extracts into one store, two resumes of one run).
    The lock file records the holder (pid, host, start time); the OS drops the lock if it dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise error(f"{what} is in use by {holder}; wait for it to finish (lock: {path})") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
