"""`emi-ray corpus affectnet|affwild2|vidmimic`: public affect datasets -> a stage-I affect corpus
(registered on cli.app as a command group)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emi_ray.cli import app, handles_errors, out
from emi_ray.cli_choices import CorpusSplit, Group, value
from emi_ray.cli_extract import _ExtractBar  # the same progress bar as extract's

corpus_app = typer.Typer(cls=Group, no_args_is_help=True,
                         help="Convert a public affect dataset into a stage-I affect corpus (see docs/corpora.md).")
app.add_typer(corpus_app, name="corpus")

OUT_HELP = "Corpus folder to write (new, empty, or one written by emi-ray corpus: conversions add up there)."
FORCE_HELP = "Write into OUT even if it is not empty and not a corpus of ours (an affect.csv there is replaced)."
JSON_HELP = "Print what was written and skipped as JSON."
CAP_HELP = "Refuse source files over this size in MB (default 2048)."
THREADS_HELP = "Threads decoding and writing media."


def _report(result, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    mods = ", ".join(f"{n} {m}" for m, n in sorted(result.modalities.items()))
    splits = ", ".join(f"{s} {n}" for s, n in sorted(result.splits.items()))
    out.print(f"{result.part}: kept {result.rows} rows ({mods}; {splits}) in {result.seconds:.1f}s; "
              f"{result.out / 'affect.csv'} now has {result.corpus_rows} rows", highlight=False)
    if result.skipped:
        out.print("skipped:", highlight=False)
        for reason, n in sorted(result.skipped.items(), key=lambda kv: -kv[1]):
            out.print(f"  {reason}: {n}  (first: {result.examples.get(reason, '')})", highlight=False)
    w = result.weights
    out.print(f"confidence weights from {', '.join(f'{k} {n}' for k, n in w['sources'].items() if n)}; "
              f"mean {w['mean']:.3f}, min {w['min']:.3f}", highlight=False)
    out.print(f"next: emi-ray pretrain --affect {result.out}", highlight=False)


def _run(convert, as_json: bool, **kwargs) -> None:
    bar = _ExtractBar("converting", transient=True)
    try:
        result = convert(progress=bar.update, **kwargs)
    finally:
        bar.close()
    _report(result, as_json)


@corpus_app.command("affectnet")
@handles_errors
def affectnet(
    csv_path: Path = typer.Argument(..., metavar="CSV", help="AffectNet annotation CSV (training.csv or "
                                                             "validation.csv)."),
    images: Path = typer.Option(..., "--images", help="Folder the CSV's subDirectory_filePath is relative to "
                                                      "(Manually_Annotated_Images)."),
    out_dir: Path = typer.Option(..., "--out", help=OUT_HELP),
    split: CorpusSplit = typer.Option(CorpusSplit.auto, "--split", help="Split of every row: train, valid, or "
                                                                        "auto (a seeded 80/20 split by path)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    max_file_mb: Optional[float] = typer.Option(None, "--max-file-mb", help=CAP_HELP),
    threads: int = typer.Option(4, "--threads", help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """AffectNet: face crops (the CSV's face box) with expression and valence/arousal."""
    from emi_ray.align.sources.affectnet import convert_affectnet

    split = value(split)
    _run(convert_affectnet, as_json, csv_path=csv_path, images=images, out=out_dir,
         split=None if split == "auto" else split, force=force, max_file_mb=max_file_mb, workers=threads)


@corpus_app.command("affwild2")
@handles_errors
def affwild2(
    annotations: Path = typer.Argument(..., metavar="ANNOTATIONS", help="Folder holding VA_Estimation_Challenge/, "
                                                                         "EXPR_Recognition_Challenge/, "
                                                                         "AU_Detection_Challenge/."),
    frames: Path = typer.Option(..., "--frames", help="The cropped_aligned folder (<video>/<i:05d>.jpg)."),
    out_dir: Path = typer.Option(..., "--out", help=OUT_HELP),
    every: int = typer.Option(10, "--every", help="Keep frame 1, 1+N, 1+2N, ...; each row stands for its N frames "
                                                  "(their valence/arousal spread sets its confidence weight)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    max_file_mb: Optional[float] = typer.Option(None, "--max-file-mb", help=CAP_HELP),
    threads: int = typer.Option(4, "--threads", help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Aff-Wild2 (ABAW): frames with expression, AUs and valence/arousal from the per-video files."""
    from emi_ray.align.sources.affwild2 import convert_affwild2

    _run(convert_affwild2, as_json, annotations=annotations, frames=frames, out=out_dir, every=every, force=force,
         max_file_mb=max_file_mb, workers=threads)


@corpus_app.command("vidmimic")
@handles_errors
def vidmimic(
    data: Path = typer.Argument(..., metavar="DATA", help="Hume-Vidmimic2 folder (train_split.csv, valid_split.csv, "
                                                          "audio/<id>.mp3)."),
    out_dir: Path = typer.Option(..., "--out", help=OUT_HELP),
    min_intensity: float = typer.Option(0.1, "--min-intensity", help="Name an emotion in the prompt only at or "
                                                                     "above this intensity (in [0, 1])."),
    top: int = typer.Option(2, "--top", help="Name at most this many emotions per prompt, strongest first."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    max_file_mb: Optional[float] = typer.Option(None, "--max-file-mb", help=CAP_HELP),
    threads: int = typer.Option(4, "--threads", help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Hume-Vidmimic2: voice clips with prompts from their six emotion intensities (the audio side)."""
    from emi_ray.align.sources.vidmimic import convert_vidmimic

    _run(convert_vidmimic, as_json, data=data, out=out_dir, min_intensity=min_intensity, top=top, force=force,
         max_file_mb=max_file_mb, workers=threads)
