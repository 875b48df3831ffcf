"""The built-in default: a synthetic dataset and feature store under EMI_RAY_HOME.

Any command that needs features and gets no path uses it, creating it on first use, so
`emi-ray train` or `emi-ray tune --space fusion` work on a fresh machine with no arguments.
It is the realism world of `synth.py` (per-dimension means, loud dimensions, persons shared
by several clips, a long tail of lengths: shaped like real encoder features), under
`synthetic/data-realism` and `synthetic/features-realism`; stores made before that, under
`synthetic/data` and `synthetic/features` (the friendlier default world), are left alone and
not reused.

A second default serves what needs encoder features of real media (stage-I search trials
align the encoders' spaces): synthetic mp4s (`synthetic/media`) through the `lite` encoders
(`synthetic/media-lite`), extracted in-process on first use (about a minute).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emi_ray.data.store import MANIFEST
from emi_ray.data.synth_dataset import write_dataset
from emi_ray.extract.driver import run_extract
from emi_ray.extract.organiser import import_organiser
from emi_ray.extract.presets import plan_extract
from emi_ray.io import home, location, locked

DEFAULT_VIDEOS = 1200
DEFAULT_MEDIA_VIDEOS = 600
DEFAULT_SEED = 0


def default_paths() -> tuple[Path, Path]:
    root = home() / "synthetic"
    return root / "data-realism", root / "features-realism"


def ensure_default_store(notify: Callable[[str], None] | None = None) -> Path:
    """Path of the default feature store, building data + store first if missing."""
    data, features = default_paths()
    if (features / MANIFEST).exists() and (features / "COMPLETE").exists():
        return features
    if notify:
        notify(f"no --features given: creating the built-in synthetic dataset at {data} (one time)")
    if not (data / "valid_split.csv").exists():
        write_dataset(data, n_videos=DEFAULT_VIDEOS, seed=DEFAULT_SEED, realism=True)
    import_organiser(data, features, command="built-in synthetic default")
    (features / "COMPLETE").write_text("ok\n")
    return features


def ensure_default_media_store(notify: Callable[[str], None] | None = None) -> Path:
    """Path of the default lite-encoder store of synthetic media, building it first if missing."""
    root = home() / "synthetic"
    data, features = root / "media", root / "media-lite"
    with locked(root / "media.lock"):
        if (features / "COMPLETE").exists():
            return features
        if notify:
            notify(f"no --features given: creating the built-in synthetic media ({DEFAULT_MEDIA_VIDEOS} mp4s) at "
                   f"{data} and their lite features at {features} (one time, about a minute)")
        if not (data / "valid_split.csv").exists():
            write_dataset(data, n_videos=DEFAULT_MEDIA_VIDEOS, seed=DEFAULT_SEED, media=True)
        run_extract(data, features, plan_extract("lite"), local=True, command="built-in synthetic media default")
        (features / "COMPLETE").write_text("ok\n")
    return features


def planned_features(path: str | Path | None, media: bool = False) -> str | Path:
    """What `resolve_features` returns, without building the default store (a --dry-run)."""
    if path:
        return location(path)
    return home() / "synthetic" / "media-lite" if media else default_paths()[1]


def resolve_features(path: str | Path | None, notify: Callable[[str], None] | None = None,
                     media: bool = False) -> str | Path:
    """`path` (a local Path, or a URI such as s3://bucket/features kept as a str), else the built-in
    default store (`media`: the one of encoder features of mp4s)."""
    if path:
        return location(path)
    return ensure_default_media_store(notify) if media else ensure_default_store(notify)
