"""The `emi-ray` command line. Thin: parse, call a library function, print.

Heavy imports (torch, ray, pyarrow) happen inside commands so `emi-ray --help` stays fast.
User errors (EmiError) print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="emi-ray: Emotional Mimicry Intensity estimation on Ray (extract, train, tune, predict).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def command_line() -> str:
    return "emi-ray " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def handles_errors(fn):
    """Turn EmiError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emi_ray.errors import EmiError

        try:
            return fn(*args, **kwargs)
        except EmiError as e:
            if _state["debug"]:
                raise
            err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def notify(msg: str) -> None:
    err.print(f"[yellow]{msg}[/yellow]", highlight=False)


@app.command()
@handles_errors
def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Directory to write the dataset into."),
    videos: int = typer.Option(600, "--videos", "-n", help="Number of clips (train/valid/test 50/25/25 %)."),
    features_only: bool = typer.Option(True, "--features-only/--media",
                                       help="Only organiser-style pkl features + transcripts (fast), "
                                            "or also small real mp4 files."),
    seed: int = typer.Option(0, "--seed"),
    realism: bool = typer.Option(False, "--realism",
                                 help="A harder world shaped like real encoder features: non-zero "
                                      "per-dimension means, a few 10-100x dimensions, persons shared by "
                                      "4 clips, ~2 % of clips 60-120 s long, sparser labels."),
    affect: bool = typer.Option(False, "--affect", help="Write a stage-I affect corpus (faces, voices, "
                                                        "affect.csv) of N items instead; see synth-affect."),
) -> None:
    """Write a synthetic dataset in the exact Hume-Vidmimic2 layout."""
    import time

    if affect:
        from emi_ray.cli_align import synth_affect

        synth_affect(out_dir, items=videos, modality="both", noisy=0.15, seed=seed)
        return

    from emi_ray.data.synth import write_dataset

    t0 = time.perf_counter()
    specs = write_dataset(out_dir, n_videos=videos, seed=seed, media=not features_only, realism=realism)
    counts = {s: sum(1 for c in specs if c.split == s) for s in ("train", "valid", "test")}
    out.print(f"wrote {len(specs)} clips to {out_dir} in {time.perf_counter() - t0:.1f}s "
              f"(train {counts['train']}, valid {counts['valid']}, test {counts['test']})")


@app.command()
@handles_errors
def extract(
    data: Path = typer.Argument(..., help="Hume-Vidmimic2-layout dataset directory."),
    out_dir: str = typer.Option(..., "--out", help="Feature store directory (or URI, e.g. s3://bucket/features) "
                                                  "to create or resume."),
    preset: str = typer.Option("organiser", "--preset",
                               help="organiser: import vit/wav2vec2 pickles + text; lite: weight-free encoders "
                                    "on raw media; paper: clip + wav2vec2 + whisper + bert from local paths."),
    video_encoder: Optional[str] = typer.Option(None, "--video-encoder", help="clip | lite | none (media presets)."),
    audio_encoder: Optional[str] = typer.Option(None, "--audio-encoder", help="wav2vec2 | lite | none."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder",
                                               help="bert | hash | none (organiser default: hash)."),
    transcriber: Optional[str] = typer.Option(None, "--transcriber",
                                              help="whisper | none (none: read text/<id>.txt if present)."),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML of local model paths: clip: FILE, "
                                          "wav2vec2: DIR, whisper: DIR, bert: DIR."),
    text_model: Optional[Path] = typer.Option(None, "--text-model", help="Local dir of a BERT-style encoder."),
    fps: float = typer.Option(5.0, "--fps", help="Video frames per second (resampled by time)."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Decode at most this much of a clip."),
    batch_size: int = typer.Option(8, "--batch-size", help="Clips per encoder call."),
    actors: Optional[int] = typer.Option(None, "--actors", help="Encoder actors (default: one per GPU, else 1)."),
    encoder_cpus: Optional[float] = typer.Option(None, "--encoder-cpus",
                                                 help="Ray CPUs per encoder actor (lite 0.25, paper 1)."),
    decode_cpus: Optional[float] = typer.Option(None, "--decode-cpus",
                                                help="Ray CPUs per decode task (lite 0.75, paper 1)."),
    transcripts: Optional[Path] = typer.Option(None, "--transcripts",
                                               help="Where whisper writes <id>.txt (default: OUT/text)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (or RAY_ADDRESS)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even if files failed; store them "
                                                            "with that modality missing."),
    aligned: Optional[Path] = typer.Option(None, "--aligned", metavar="RUN",
                                           help="A stage-I run (emi-ray pretrain): store features mapped by its "
                                                "heads in OUT (the raw ones are kept in OUT/unaligned)."),
) -> None:
    """Build the feature store from a dataset directory (re-running resumes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emi_ray.errors import InputError
    from emi_ray.io import is_uri, join, location

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    out_dir = location(out_dir)  # a URI stays a str (a Path would fold s3:// into s3:/)
    if is_uri(out_dir) and aligned:
        raise InputError(f"--aligned with --out {out_dir}: the aligned store must be a local directory")
    final_out, out_dir = out_dir, (out_dir / "unaligned" if aligned else out_dir)
    if preset == "organiser":
        media_only = {"--video-encoder": video_encoder, "--audio-encoder": audio_encoder,
                      "--transcriber": transcriber, "--models": models, "--actors": actors,
                      "--encoder-cpus": encoder_cpus, "--decode-cpus": decode_cpus, "--max-seconds": max_seconds}
        given = [k for k, v in media_only.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)}: only for the media presets (lite, paper), not organiser")
        if aligned:
            from emi_ray.align.stage2 import check_run

            check_run(aligned, {"text": text_encoder or "hash"}, media=False)
        from emi_ray.extract.organiser import import_organiser

        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("importing", total=None)
            summary = import_organiser(
                data, out_dir, text_encoder=text_encoder or "hash",
                text_model=str(text_model) if text_model else None,
                skip_bad=skip_bad, command=command_line(),
                progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
    else:
        from emi_ray.extract.pipeline import run_extract
        from emi_ray.extract.presets import check_paths, load_models_file, plan_extract

        paths = load_models_file(models)
        if text_model is not None:
            paths.setdefault("bert", {})["path"] = str(text_model)
        plan = plan_extract(preset, video=video_encoder, audio=audio_encoder, text=text_encoder,
                            transcriber=transcriber, models=paths, fps=fps, max_seconds=max_seconds,
                            batch_size=batch_size, actors=actors, encoder_cpus=encoder_cpus,
                            decode_cpus=decode_cpus)
        check_paths(plan)  # every missing model path in one message, before any work
        if is_uri(out_dir) and plan.transcriber is not None and transcripts is None:
            raise InputError(f"a transcriber with --out {out_dir}: pass --transcripts DIR, a local directory "
                             f"for the transcripts")
        if aligned:
            from emi_ray.align.stage2 import check_run, tuned_plan

            check_run(aligned, {s: c.name for s, c in plan.choices().items() if s != "transcriber"})
            plan, out_dir = tuned_plan(aligned, plan, final_out)  # fine-tuned blocks: loaded by the encoders
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(f"extract ({preset})", total=None)
            summary = run_extract(
                data, out_dir, plan, skip_bad=skip_bad, address=address, command=command_line(),
                transcripts=transcripts, progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
    out.print(f"{out_dir}: {summary.done} done, {summary.skipped} skipped (already stored), "
              f"{summary.failed} failed")
    if aligned:
        from emi_ray.align.stage2 import extract_aligned

        rec = extract_aligned(out_dir, aligned, final_out)
        out.print(f"{final_out}: {', '.join(rec['modalities'])} mapped through the stage-I heads of {aligned}")
    if summary.failed:
        for e in summary.errors[:5]:
            where = "" if e["message"].startswith(e["file"]) else f"{e['file']}: "
            err.print(f"  {where}{e['message']}", highlight=False, soft_wrap=True)
        err.print(f"  all failures: {join(out_dir, 'errors.csv')}", highlight=False)
        if not skip_bad:
            raise typer.Exit(1)


@app.command()
@handles_errors
def info(
    features: Optional[str] = typer.Argument(None, help="Feature store: a directory or a URI such as "
                                                        "s3://bucket/features (default: built-in synthetic)."),
    as_json: bool = typer.Option(False, "--json"),
    stats: bool = typer.Option(False, "--stats", help="Compute the train split's normalisation statistics "
                                                      "(zscore and robust) and keep them in the store, so "
                                                      "runs and search trials read them instead of recomputing."),
) -> None:
    """Counts per split, feature dims and sequence lengths of a feature store."""
    from emi_ray.data.default import resolve_features
    from emi_ray.data.store import FeatureStore

    store = FeatureStore(resolve_features(features, notify))
    summary = store.info()
    if stats:
        from emi_ray.data.normalize import MODES, write_store_stats

        summary["stats"] = {mode: _stats_summary(write_store_stats(store, mode)) for mode in MODES if mode != "none"}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"[bold]{summary['path']}[/bold]  ({summary['command']})", highlight=False)
    out.print("videos: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
              + f"; import errors: {summary['errors']}")
    t = Table("modality", "encoder", "dim", "rate Hz", "missing", "length min/p50/mean/p95/max")
    for m, e in summary["modalities"].items():
        ln = e.get("length")
        t.add_row(m, e["encoder"], str(e["dim"]), str(e.get("rate_hz") or "-"), str(e.get("missing", "-")),
                  f"{ln['min']}/{ln['p50']:.0f}/{ln['mean']:.1f}/{ln['p95']:.0f}/{ln['max']}" if ln else "-")
    out.print(t)
    if stats:
        t = Table("statistics", "modality", "|shift| mean", "scale min/median/max", "constant dims")
        for mode, per in summary["stats"].items():
            for m, e in per.items():
                t.add_row(mode, m, f"{e['shift']:.3g}", "/".join(f"{v:.3g}" for v in e["scale"]), str(e["constant"]))
        out.print(t)
        out.print(f"statistics of the train split kept in {store.root}/stats/ (zscore.json, robust.json)")


def _stats_summary(norm) -> dict:
    import numpy as np

    return {m: {"shift": float(np.abs(norm.mean[m]).mean()),
                "scale": [float(np.min(norm.scale[m])), float(np.median(norm.scale[m])), float(np.max(norm.scale[m]))],
                "constant": norm.constant.get(m, 0)} for m in norm.mean}


@app.command()
@handles_errors
def score(
    preds: Path = typer.Argument(..., metavar="PREDS_CSV"),
    labels: Path = typer.Argument(..., metavar="LABELS_CSV"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Mean Pearson r (and per emotion) of a predictions CSV against a labels CSV."""
    from emi_ray.scoring import score_files

    result = score_files(preds, labels)
    for w in result["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    print_scores(result, as_json)


def print_scores(result: dict, as_json: bool, reference: dict | None = None,
                 reference_name: str = "reference") -> None:
    """Per-emotion and mean r; with `reference` (per-emotion r of e.g. the ridge baseline), side by side."""
    if as_json:
        out.print_json(json.dumps(result))
        return
    t = Table("emotion", "pearson r", *([reference_name] if reference else []))
    for k, v in result["per_emotion"].items():
        t.add_row(k, f"{v:.4f}", *([f"{reference[k]:.4f}"] if reference else []))
    ref_mean = [f"[bold]{sum(reference.values()) / len(reference):.4f}[/bold]"] if reference else []
    t.add_row("[bold]mean[/bold]", f"[bold]{result['mean_pearson']:.4f}[/bold]", *ref_mean)
    out.print(t)




# Commands of the other stages register themselves on `app` (their heavy imports stay lazy).
from emi_ray import cli_train  # noqa: E402,F401
from emi_ray import cli_ops  # noqa: E402,F401
from emi_ray import cli_tune  # noqa: E402,F401
from emi_ray import cli_align  # noqa: E402,F401
from emi_ray import cli_baseline  # noqa: E402,F401


def main() -> None:
    app()


if __name__ == "__main__":  # run the registered app, not this module's second copy
    from emi_ray.cli import main as _main

    _main()
