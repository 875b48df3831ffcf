"""Operations helpers: find a run's Optuna study storage, serve optuna-dashboard on it.

A search run directory (`emi-ray tune`) holds its study in `RUN/optuna.db` (sqlite, study
"search"); a `.journal` file (Optuna's JournalStorage) works too. A study copied to object
storage (`s3://bucket/runs/tune-x/optuna.db`: sqlite cannot live there) is served from a
local snapshot. Dashboards bind to
127.0.0.1 by default: reach them from elsewhere through SSH port forwarding.
"""

from __future__ import annotations

import errno
import posixpath
import socket
from pathlib import Path

from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna_dashboard import run_server

from emi_ray.errors import InputError
from emi_ray.io import exists, join, read_bytes

STORAGE_NAMES = ("optuna.db", "optuna.journal", "study.db", "study.journal")
SUFFIXES = (".db", ".sqlite", ".sqlite3", ".journal", ".log")


def find_study_storage(path: str | Path) -> Path:
    """The study storage file of a search run directory, or `path` itself if it is one."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise InputError(f"{p}: not an Optuna storage (expected a {', '.join(SUFFIXES)} file or a search run "
                             f"directory)")
        return p.resolve()
    if not p.is_dir():
        raise InputError(f"{p}: no such search run directory or study file")
    for name in STORAGE_NAMES:
        if (p / name).is_file():
            return (p / name).resolve()
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".db", ".journal"))
    if len(found) == 1:
        return found[0].resolve()
    what = "several: " + ", ".join(f.name for f in found) if found else "none"
    raise InputError(f"{p}: no Optuna study storage found ({what}); pass the .db or .journal file itself, "
                     f"or a directory written by `emi-ray tune`")


def fetch_study_snapshot(uri: str, into: Path) -> Path:
    """Copy the study file of a search run directory on object storage (or that file itself) into `into`."""
    names = [uri] if uri.rstrip("/").endswith(SUFFIXES) else [join(uri, n) for n in STORAGE_NAMES]
    try:
        src = next((n for n in names if exists(n)), None)
        data = read_bytes(src) if src else None
    except OSError as e:  # no credentials, no such bucket, endpoint unreachable
        raise InputError(f"{uri}: cannot read ({e})") from None
    if src is None:
        raise InputError(f"{uri}: no Optuna study storage found (looked for {', '.join(STORAGE_NAMES)})")
    into.mkdir(parents=True, exist_ok=True)
    dst = into / posixpath.basename(str(src))
    dst.write_bytes(data)
    return dst


def open_storage(path: Path):
    """An optuna storage object for a sqlite or journal file (read by the dashboard)."""
    if path.suffix == ".journal" or path.suffix == ".log":
        return JournalStorage(JournalFileBackend(str(path)))
    return RDBStorage(f"sqlite:///{path}")


def storage_url(path: Path) -> str:
    """What to give the `optuna-dashboard` command line for this file."""
    return str(path) if path.suffix in (".journal", ".log") else f"sqlite:///{path}"


def _bind(host: str, port: int) -> int:
    """Bind a TCP socket of host's address family (IPv4 or IPv6) to (host, port); return the port."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise InputError(f"--host {host}: not a host name or address ({e.strerror})") from None
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InputError(f"{host}:{port} is in use; choose another --port (or --port 0 for a free one)") \
                    from None
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        return s.getsockname()[1]


def free_port(host: str = "127.0.0.1") -> int:
    return _bind(host, 0)


def check_port(host: str, port: int) -> None:
    _bind(host, port)


def http_url(host: str, port: int) -> str:
    """http://host:port/, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_dashboard(storage_file: Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard on the study file until interrupted (blocks)."""
    run_server(open_storage(storage_file), host=host, port=port)
