"""`emi-ray extract`: the feature store, and with `aligned=RUN` its twin mapped by stage-I heads.

Without a run this is `emi_ray.extract.run`. With one (a stage-I run, `emi-ray pretrain`):
check that RUN's heads fit the request's encoders, extract the raw features into
OUT/unaligned (or OUT/tuned-<digest> through RUN's fine-tuned encoder blocks, see
`tuned_plan`), then write OUT = those features mapped through RUN's heads. OUT must be a
local directory then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emi_ray.align.aligned_store import check_run, extract_aligned, refuse_unaligned, tuned_plan
from emi_ray.data.store_guard import check_target
from emi_ray.errors import InputError
from emi_ray.extract import ExtractRequest, run
from emi_ray.extract.entry import plan_request
from emi_ray.extract.organiser import ExtractSummary
from emi_ray.io import is_uri, location


@dataclass
class ExtractionResult:
    summary: ExtractSummary  # of the extraction into `store`
    store: str | Path  # where the extracted features are: OUT, or with a run OUT/unaligned or OUT/tuned-...
    out: str | Path  # OUT
    aligned: dict | None = None  # with a run: the aligned store's record (its `modalities`)


def extract_dataset(data: str | Path, out: str | Path, request: ExtractRequest, aligned: str | Path | None = None,
                    extracted: Callable[[ExtractionResult], None] | None = None) -> ExtractionResult:
    """Extract `data` into `out` as `request` asks, then with `aligned` (a stage-I run) map the
    features through its heads into `out`. `extracted(result)` is called once the features are
    extracted, before they are mapped (the CLI prints the extraction's summary then)."""
    out = location(out)  # a URI stays a str (a Path would fold s3:// into s3:/)
    if aligned is None:
        result = ExtractionResult(run(data, out, request), store=out, out=out)
    else:
        result = _extract_unaligned(data, out, request, aligned)
    if extracted:
        extracted(result)
    if aligned is not None:
        result.aligned = extract_aligned(result.store, aligned, out)
    return result


def _extract_unaligned(data: str | Path, out: str | Path, request: ExtractRequest,
                       aligned: str | Path) -> ExtractionResult:
    """The raw features for a stage-I run's heads: checked against the run, extracted (through
    its fine-tuned blocks, if any) next to `out`."""
    if is_uri(out):
        raise InputError(f"--aligned with --out {out}: the aligned store must be a local directory")
    store = out / "unaligned"
    plan = plan_request(request, store)
    if plan is None:  # the organiser import: text only, and never through fine-tuned blocks
        check_run(aligned, {"text": request.text_encoder or "hash"}, media=False)
    else:
        check_run(aligned, {s: c.name for s, c in plan.choices().items() if s != "transcriber"})
        plan, store = tuned_plan(aligned, plan, out)  # fine-tuned blocks: loaded by the encoders
    _check_aligned_target(out, request.force)
    return ExtractionResult(run(data, store, request, plan=plan), store=store, out=out)


def _raw_store(name: str) -> bool:
    """The raw stores an aligned OUT holds (OUT/unaligned, OUT/tuned-<digest>)."""
    return name == "unaligned" or name.startswith("tuned-")


def _check_aligned_target(out: Path, force: bool) -> None:
    """Before any work: OUT is new, empty, an aligned store, or holds only our raw stores (else --force);
    never an unaligned store."""
    refuse_unaligned(out)
    check_target(out, force, ours=_raw_store)
