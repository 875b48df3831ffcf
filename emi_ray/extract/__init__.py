"""Feature extraction: decoding media (PyAV), encoders, and the Ray Data pipeline.

The library entry point is `run(data, out, ExtractRequest(...))`. This package imports only
the standard library: every extract module (a Ray worker's decode task too) imports it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emi_ray.extract.request import ExtractRequest

if TYPE_CHECKING:
    from emi_ray.extract.organiser import ExtractSummary
    from emi_ray.extract.presets import Plan

__all__ = ["ExtractRequest", "run"]


def run(data: str | Path, out: str | Path, request: ExtractRequest, *, plan: Plan | None = None) -> ExtractSummary:
    """Extract the dataset directory `data` into the store `out` as `request` asks (entry.run)."""
    # lazy: keeps this package light (see above)
    from emi_ray.extract.entry import run as run_request

    return run_request(data, out, request, plan=plan)
