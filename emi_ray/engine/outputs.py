"""What a finished run leaves for people: metrics.json, history.csv and curve.png."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from emi_ray.io import atomic_write_text
from emi_ray.plots import learning_curve


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))


def write_history(run_dir: Path, history: list[dict[str, Any]], curve: bool = True) -> None:
    """One CSV row per epoch (the columns of the last epoch) and, with `curve`, the learning curves."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[-1]))
    w.writeheader()
    w.writerows(history)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())
    if curve:
        learning_curve(history, run_dir / "curve.png")
