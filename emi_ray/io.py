"""Small file helpers: atomic writes and where outputs land (EMI_RAY_HOME)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def home() -> Path:
    """Root of emi-ray's outputs: $EMI_RAY_HOME, default ~/.emi-ray."""
    return Path(os.environ.get("EMI_RAY_HOME", "~/.emi-ray")).expanduser()


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
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
    import contextlib

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


def read_yaml_mapping(path: str | Path, error: type[Exception], what: str, expected: str) -> dict:
    """A YAML file that must hold a mapping; every problem is one `error` naming the file."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise error(f"{p}: {what} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected {expected}")
    return data
