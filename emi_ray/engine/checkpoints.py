"""Per-epoch checkpoints: a directory holding one torch file with the loop's whole state.

Reported to Ray (which copies the directory into its storage) or, with a local root
(in-process runs, where Ray keeps none), kept as ROOT/epoch-NNNN with older ones pruned.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from emi_ray.engine.report import Report
from emi_ray.io import atomic_path

STATE_FILE = "state.pt"


def load_state(ckpt_dir: str | Path | None, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The state saved in a checkpoint directory (None: start fresh)."""
    if ckpt_dir is None:
        return None
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location=device, weights_only=True)


def report_with_checkpoint(report: Report, metrics: dict, state: dict | None,
                           root: str | Path | None, save: bool = True) -> None:
    """Save `state` (rank 0; None elsewhere) and report it with the epoch's metrics.

    `save=False` (an epoch between checkpoints; every rank must agree): nothing is reported to
    Ray (a Ray Train report costs ~2 s, against ~0.1 s of a stage-I epoch), only the epoch's
    progress is recorded where `report` records it (`progress_only`, engine/progress.py)."""
    if not save:
        note = getattr(report, "progress_only", None)
        if note is not None:
            note(metrics)
        return
    if state is None:
        report(metrics, None)
        return
    if root is None:  # Ray copies the directory during report
        with tempfile.TemporaryDirectory(prefix="emi-ckpt-") as d:
            torch.save(state, Path(d) / STATE_FILE)
            report(metrics, d)
        return
    d = Path(root) / f"epoch-{state['epoch']:04d}"
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / STATE_FILE) as tmp:
        torch.save(state, tmp)
    report(metrics, str(d))
    for old in Path(root).glob("epoch-*"):
        if old != d:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = sorted(p for p in Path(root).glob("epoch-*") if (p / STATE_FILE).exists())
    return found[-1] if found else None
