"""Run directories: where a run writes, the guard against overwriting one, Ray's storage for it."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, held_alone, home, join, resolved

STORAGE_FILE = "storage.txt"


def new_run_dir(prefix: str = "train") -> Path:
    """EMI_RAY_HOME/runs/PREFIX-YYYYmmdd-HHMMSS (a -N suffix when that exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = home() / "runs"
    path = base / f"{prefix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{prefix}-{stamp}-{n}"
    return path


def check_run_dir(run_dir: Path, resume: bool, marker: str = "config.yaml") -> None:
    """A new run never writes over a finished or started one; a resumed one needs its `marker` file."""
    if (run_dir / "config.yaml").exists() and not resume:
        raise EmiError(f"{run_dir}: run directory exists; pass --resume to continue it or choose a new --out")
    if resume and not (run_dir / marker).exists():
        raise EmiError(f"{run_dir}: nothing to resume (no {marker})")


LOCK = ".lock"


def run_lock(run_dir: Path):
    """Held while a run trains: a second `--resume` of the same run gets one line naming the holder."""
    return held_alone(run_dir / LOCK, f"run directory {run_dir}", EmiError)


def start_multi_run(run_dir: Path, resume: bool) -> None:
    """The parent directory of a multi-run job (folds, seeds, a grid): new and empty unless resumed."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise EmiError(f"{run_dir}: run directory exists; pass --resume to continue it or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)


def storage_name(run_dir: Path) -> str:
    """The run's name in a shared storage (e.g. s3://bucket/ray/NAME): its directory name plus a digest
    of its full path, so two runs of one name (on two machines, or two EMI_RAY_HOMEs) never share
    or delete each other's experiment state."""
    return f"{run_dir.name}-{hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]}"


def ray_storage(run_dir: Path, storage: str | Path | None, resume: bool = False) -> str:
    """Where Ray keeps the run's checkpoints and experiment state: RUN/ray, or STORAGE/<storage_name> (e.g.
    on S3) when `storage` is given; recorded in RUN/storage.txt. A resumed run keeps the storage it started
    with (whatever --storage or EMI_RAY_STORAGE say now)."""
    recorded = run_dir / STORAGE_FILE
    if resume:
        return recorded.read_text().strip() if recorded.is_file() else str((run_dir / "ray").resolve())
    if storage is None:
        return str((run_dir / "ray").resolve())
    root = str(join(resolved(storage), storage_name(run_dir)))
    atomic_write_text(recorded, f"{root}\n")
    return root
