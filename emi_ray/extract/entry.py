"""The library entry point: an `ExtractRequest`'s rules, then the organiser import or the pipeline.

`run(data, out, request)` is what `emi-ray extract` (without --aligned) does. `plan_request`
applies the rules alone, for a workflow that adjusts the plan before running it (see
workflows/extraction.py): the organiser preset refuses the media-only options; a media
preset becomes a `Plan` whose local model paths all exist, and a transcriber writing into
a URI store needs a local `transcripts` directory.
"""

from __future__ import annotations

from pathlib import Path

from emi_ray.errors import InputError
from emi_ray.extract.driver import run_extract
from emi_ray.extract.organiser import ExtractSummary, import_organiser
from emi_ray.extract.presets import Plan, check_paths, load_models_file, plan_extract
from emi_ray.extract.request import ORGANISER, ExtractRequest
from emi_ray.io import is_uri, location


def plan_request(request: ExtractRequest, out: str | Path) -> Plan | None:
    """The checked media `Plan` of `request` into the store `out`; None for the organiser preset
    (after refusing the options it does not take). Raises InputError naming what is wrong."""
    r = request
    if r.preset == ORGANISER:
        given = [k for k, v in r.media_only().items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)}: only for the media presets (lite, paper), not organiser")
        return None
    paths = load_models_file(r.models)
    if r.text_model is not None:  # the text encoder's directory, whichever of the two transformers ones the plan uses
        for name in ("bert", "text-lm"):
            paths.setdefault(name, {})["path"] = str(r.text_model)
    plan = plan_extract(r.preset, video=r.video_encoder, audio=r.audio_encoder, text=r.text_encoder,
                        transcriber=r.transcriber, models=paths, fps=r.fps, max_seconds=r.max_seconds,
                        batch_size=r.batch_size, actors=r.actors, encoder_cpus=r.encoder_cpus,
                        decode_cpus=r.decode_cpus)
    check_paths(plan)  # every missing model path in one message, before any work
    if is_uri(out) and plan.transcriber is not None and r.transcripts is None:
        raise InputError(f"a transcriber with --out {location(out)}: pass --transcripts DIR, a local directory "
                         f"for the transcripts")
    return plan


def run(data: str | Path, out: str | Path, request: ExtractRequest, *, plan: Plan | None = None) -> ExtractSummary:
    """Extract (or resume extracting) the dataset directory `data` into the store `out`
    (a directory or a URI) as `request` asks. `plan`: a media plan from `plan_request(request,
    out)` that a workflow adjusted (None: `plan_request`'s own)."""
    out = location(out)  # a URI stays a str (a Path would fold s3:// into s3:/)
    plan = plan if plan is not None else plan_request(request, out)
    r = request
    if r.progress:
        r.progress(0, None)
    if plan is None:
        return import_organiser(data, out, text_encoder=r.text_encoder or "hash",
                                text_model=str(r.text_model) if r.text_model else None,
                                skip_bad=r.skip_bad, command=r.command, progress=r.progress, force=r.force,
                                max_file_mb=r.max_file_mb)
    return run_extract(data, out, plan, skip_bad=r.skip_bad, address=r.address, command=r.command,
                       transcripts=r.transcripts, progress=r.progress, force=r.force, max_file_mb=r.max_file_mb)
