"""RUN/provenance.json: how a run directory was made.

Written where a run directory's config is written (train runs, each ensemble or fold member and
their parent, pretrain runs, baseline runs, tune searches, ablations):

  kind          train | folds | seeds | pretrain | baseline | search | ablation
  command       the command line: `emi-ray ...` for the CLI, a library caller's own sys.argv
  argv, cwd     the process's sys.argv and working directory
  created       local time, ISO 8601
  emi_ray       the package version
  git_commit    `git rev-parse HEAD` of the checkout the package runs from; None when it is not a
                checkout (an installed wheel) or git is missing; `git_dirty`: uncommitted changes
                to tracked files (None where unknown)
  python, platform, packages   interpreter, OS, and versions of torch, ray, optuna, numpy, ...
  features      the feature store (None for a pretrain run: `corpus` instead), and
  features_manifest_sha256     sha256 of FEATURES/manifest.json (None where unreadable)
  resumed       each `--resume` of the run: command, created, emi_ray, git_commit

Never fails a run: whatever cannot be found is recorded as None.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import emi_ray
from emi_ray.io import atomic_write_text, join, load_yaml, read_bytes, resolved

PROVENANCE = "provenance.json"
MANIFEST = "manifest.json"  # emi_ray.data.store.MANIFEST (not imported: that pulls in numpy and pyarrow)
PACKAGES = ("emi-ray", "torch", "torchvision", "torchaudio", "ray", "optuna", "numpy", "pyarrow", "pandas",
            "transformers", "open_clip_torch", "faster-whisper", "av", "typer")


def command_line(argv: list[str] | None = None) -> str:
    """The command as a person would retype it: `emi-ray ...` for the CLI (the console script or
    `python -m emi_ray`), else the process's argv."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]).name if argv else ""
    if prog == "emi-ray" or (prog == "__main__.py" and Path(argv[0]).parent.name == "emi_ray"):
        return shlex.join(["emi-ray", *argv[1:]])
    return shlex.join(argv)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the stack (from package metadata: nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout this package runs from; (None, None) when it runs from an
    installed copy, git is missing or fails. The checkout must hold this very package (a virtual
    environment inside some other repository does not count)."""
    pkg = Path(emi_ray.__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD", "--show-toplevel"], cwd=pkg, capture_output=True,
                           text=True, timeout=10, env=env)
        lines = r.stdout.split()
        if r.returncode != 0 or len(lines) != 2 or (Path(lines[1]) / pkg.name).resolve() != pkg:
            return None, None
        commit = lines[0]
        s = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=lines[1],
                           capture_output=True, text=True, timeout=10, env=env)
        return commit, (bool(s.stdout.strip()) if s.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None


def manifest_digest(features: str | Path | None) -> str | None:
    """sha256 of FEATURES/manifest.json; None without a store or where it cannot be read."""
    if features is None:
        return None
    try:
        return hashlib.sha256(read_bytes(join(features, MANIFEST))).hexdigest()
    except Exception:  # noqa: BLE001  an unreachable or odd store never fails the run
        return None


def provenance(kind: str, features: str | Path | None = None, command: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The record for a new run directory (see the module doc); `extra` keys are added as given."""
    commit, dirty = git_state()
    feats = None if features is None else str(resolved(features))
    return {"kind": kind, "command": command or command_line(), "argv": list(sys.argv), "cwd": os.getcwd(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "emi_ray": emi_ray.__version__,
            "git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "platform": platform.platform(), "packages": package_versions(), "features": feats,
            "features_manifest_sha256": manifest_digest(features), **extra}


def write_provenance(run_dir: str | Path, kind: str, features: str | Path | None = None, *, resume: bool = False,
                     command: str | None = None, **extra: Any) -> Path:
    """Write RUN/provenance.json (a resumed run that has one keeps it and appends to `resumed`)."""
    path = Path(run_dir) / PROVENANCE
    old = read_provenance(run_dir) if resume else None
    if old is not None:
        commit, _ = git_state()
        old.setdefault("resumed", []).append({"command": command or command_line(), "emi_ray": emi_ray.__version__,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                              "git_commit": commit})
        record = old
    else:
        record = provenance(kind, features, command, **extra)
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/provenance.json, or None where the run has none (made before it was recorded) or it is unreadable."""
    try:
        record = json.loads((Path(run_dir) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# What `emi-ray info RUN` shows: a run directory's provenance, config summary and metrics.
MARKERS = {  # file -> kind, for runs made before provenance.json (first match wins)
    "search.json": "search", "ablation.json": "ablation", "ensemble.json": "ensemble", "baseline.npz": "baseline",
    "stage1.json": "pretrain", "config.yaml": "train",
}
METRICS = {"search": "summary.json", "ablation": "ablation.json", "folds": "cv.json"}


def is_run_dir(path: str | Path) -> bool:
    """A run directory (any kind) rather than a feature store."""
    p = Path(path)
    return p.is_dir() and not (p / MANIFEST).exists() and (
        (p / PROVENANCE).exists() or any((p / m).exists() for m in MARKERS))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config(run: Path, kind: str, prov: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's config as a mapping: config.yaml, a search's or an ablation's base config, an ensemble's
    first member's."""
    import yaml

    if kind == "ablation":
        return (prov or {}).get("base")
    if kind == "search":
        settings = _read_json(run / "search.json") or {}
        return settings.get("base")
    path = run / "config.yaml"
    if not path.is_file() and (run / "ensemble.json").is_file():
        members = (_read_json(run / "ensemble.json") or {}).get("members") or []
        path = run / members[0] / "config.yaml" if members else path
    try:
        cfg = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def config_changes(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The flattened config keys that differ from the defaults (all keys where it is not a training config)."""
    from emi_ray.config import Config

    if not cfg:
        return {}
    flat = _flat(cfg)
    if not set(cfg) & {"data", "model", "train", "stage1"}:
        return flat
    defaults = _flat(Config().to_dict())
    return {k: v for k, v in flat.items() if k not in defaults or defaults[k] != v}


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """{path, kind, provenance, config, config_changes, metrics, store_changed} of a run directory."""
    run = Path(run_dir)
    prov = read_provenance(run)
    kind = (prov or {}).get("kind") or next((k for m, k in MARKERS.items() if (run / m).exists()), "run")
    if kind == "ensemble":
        kind = (_read_json(run / "ensemble.json") or {}).get("kind") or kind
    metrics = _read_json(run / METRICS.get(kind, "metrics.json"))
    cfg = _config(run, kind, prov)
    changed = None
    if prov and prov.get("features") and prov.get("features_manifest_sha256"):
        now = manifest_digest(prov["features"])
        changed = None if now is None else now != prov["features_manifest_sha256"]
    return {"path": str(run), "kind": kind, "provenance": prov, "config": cfg, "config_changes": config_changes(cfg),
            "metrics": metrics, "store_changed": changed}
