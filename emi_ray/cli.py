"""The `emi-ray` command line. Thin: parse, call a library function, print.

Heavy imports (torch, ray, pyarrow) happen inside commands so `emi-ray --help` stays fast.
User errors (EmiError) print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from emi_ray import VERBOSE_ENV, __version__
from emi_ray.cli_choices import (AudioEncoder, Group, Preset, TextEncoder, Transcriber, VideoEncoder,
                                 value)

app = typer.Typer(
    help="emi-ray: Emotional Mimicry Intensity estimation on Ray (extract, train, tune, predict).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion SHELL
    cls=Group,  # a usage error is one line, exit 2
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}


def _version(show: bool) -> None:
    if show:
        out.print(f"emi-ray {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the emi-ray version and exit."),
          verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own log lines on the console "
                                                               "(default: kept in the run's ray.log).")) -> None:
    _state["debug"] = debug
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # read where Ray starts (emi_ray.ray_env)


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
    seed: int = typer.Option(0, "--seed", help="Random seed of the generated world."),
    realism: bool = typer.Option(False, "--realism",
                                 help="A harder world shaped like real encoder features: non-zero "
                                      "per-dimension means, a few 10-100x dimensions, persons shared by "
                                      "4 clips, ~2 % of clips 60-120 s long, sparser labels."),
    affect: bool = typer.Option(False, "--affect", help="Write a stage-I affect corpus (faces, voices, "
                                                        "affect.csv) of N items instead; see synth-affect."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a synthetic dataset in the exact Hume-Vidmimic2 layout."""
    import time

    if affect:
        from emi_ray.cli_align import synth_affect

        synth_affect(out_dir, items=videos, modality="both", noisy=0.15, seed=seed, as_json=as_json)
        return

    from emi_ray.data.synth_dataset import write_dataset

    t0 = time.perf_counter()
    specs = write_dataset(out_dir, n_videos=videos, seed=seed, media=not features_only, realism=realism)
    counts = {s: sum(1 for c in specs if c.split == s) for s in ("train", "valid", "test")}
    if as_json:
        out.print_json(json.dumps({"out": str(out_dir), "clips": len(specs), "splits": counts, "seed": seed,
                                   "media": not features_only, "realism": realism,
                                   "seconds": round(time.perf_counter() - t0, 3)}))
        return
    out.print(f"wrote {len(specs)} clips to {out_dir} in {time.perf_counter() - t0:.1f}s "
              f"(train {counts['train']}, valid {counts['valid']}, test {counts['test']})")


@app.command()
@handles_errors
# long only for its options: the body builds a request, shows the bar and prints the summary
def extract(
    data: Path = typer.Argument(..., help="Hume-Vidmimic2-layout dataset directory."),
    out_dir: str = typer.Option(..., "--out", help="Feature store directory (or URI, e.g. s3://bucket/features) "
                                                  "to create or resume."),
    preset: Preset = typer.Option(Preset.organiser, "--preset",
                               help="organiser: import vit/wav2vec2 pickles + text; lite: weight-free encoders "
                                    "on raw media; paper: clip + wav2vec2 + whisper + bert from local paths."),
    video_encoder: Optional[VideoEncoder] = typer.Option(None, "--video-encoder",
                                                         help="Video encoder (media presets; default: the preset's)."),
    audio_encoder: Optional[AudioEncoder] = typer.Option(None, "--audio-encoder",
                                                         help="Audio encoder (media presets; default: the preset's)."),
    text_encoder: Optional[TextEncoder] = typer.Option(None, "--text-encoder",
                                                       help="Text encoder (default: the preset's; organiser: hash)."),
    transcriber: Optional[Transcriber] = typer.Option(None, "--transcriber",
                                                      help="Speech to text (none: read text/<id>.txt if present)."),
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
    as_json: bool = typer.Option(False, "--json", help="Print the summary (done, skipped, failed, errors) as "
                                                      "JSON; the progress bar stays on stderr."),
) -> None:
    """Build the feature store from a dataset directory (re-running resumes)."""
    from emi_ray.extract import ExtractRequest
    from emi_ray.io import join
    from emi_ray.workflows.extraction import extract_dataset

    preset, video_encoder, audio_encoder = value(preset), value(video_encoder), value(audio_encoder)
    text_encoder, transcriber = value(text_encoder), value(transcriber)
    organiser = preset == "organiser"
    bar = _ExtractBar("importing" if organiser else f"extract ({preset})", transient=organiser)
    request = ExtractRequest(
        preset=preset, video_encoder=video_encoder, audio_encoder=audio_encoder, text_encoder=text_encoder,
        transcriber=transcriber, models=models, text_model=text_model, fps=fps, max_seconds=max_seconds,
        batch_size=batch_size, actors=actors, encoder_cpus=encoder_cpus, decode_cpus=decode_cpus,
        transcripts=transcripts, address=address, skip_bad=skip_bad, command=command_line(), progress=bar.update)

    def extracted(result) -> None:
        bar.close()
        s = result.summary
        if not as_json:
            out.print(f"{result.store}: {s.done} done, {s.skipped} skipped (already stored), {s.failed} failed")

    try:
        result = extract_dataset(data, out_dir, request, aligned=aligned, extracted=extracted)
    finally:
        bar.close()
    summary = result.summary
    if as_json:
        out.print_json(json.dumps({"store": str(result.store), "out": str(result.out), "done": summary.done,
                                   "skipped": summary.skipped, "failed": summary.failed,
                                   "errors": summary.errors, "errors_csv": str(join(result.store, "errors.csv")),
                                   "aligned": None if not aligned else {"run": str(aligned), **result.aligned}},
                                  default=str))
    elif aligned:
        out.print(f"{result.out}: {', '.join(result.aligned['modalities'])} mapped through the stage-I heads "
                  f"of {aligned}")
    if summary.failed:
        for e in summary.errors[:5]:
            where = "" if e["message"].startswith(e["file"]) else f"{e['file']}: "
            err.print(f"  {where}{e['message']}", highlight=False, soft_wrap=True)
        err.print(f"  all failures: {join(result.store, 'errors.csv')}", highlight=False)
        if not skip_bad:
            raise typer.Exit(1)


class _ExtractBar:
    """`extract`'s progress bar on stderr, shown from the library's first progress call (once its
    checks passed) until `close`."""

    def __init__(self, label: str, transient: bool):
        self.label, self.transient, self.bar, self.task = label, transient, None, None

    def update(self, done: int, total: int | None) -> None:
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.bar = Progress(*columns, console=err, transient=self.transient)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=None)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@app.command()
@handles_errors
def info(
    path: Optional[str] = typer.Argument(None, metavar="[FEATURES|RUN]",
                                         help="Feature store (a directory or a URI such as s3://bucket/features; "
                                              "default: built-in synthetic), or a run directory: how it was made "
                                              "(provenance.json), its config and metrics."),
    features: Optional[str] = typer.Option(None, "--features", help="Feature store (the same as the FEATURES "
                                                                    "argument)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    stats: bool = typer.Option(False, "--stats", help="Compute the train split's normalisation statistics "
                                                      "(zscore and robust) and keep them in the store, so "
                                                      "runs and search trials read them instead of recomputing."),
) -> None:
    """Counts per split, feature dims and sequence lengths of a feature store; or what a run directory is."""
    from emi_ray.errors import EmiError

    if path is not None and features is not None and path != features:
        raise EmiError(f"info: give the store once (FEATURES {path!r} or --features {features!r})")
    features = features or path
    if features is not None and path is not None:
        from emi_ray.engine.provenance import is_run_dir

        if is_run_dir(path):
            if stats:
                raise EmiError(f"{path}: --stats is for a feature store, not a run directory")
            return _print_run(path, as_json)
    from emi_ray.workflows.default_store import resolve_features
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


def _print_run(run: str, as_json: bool) -> None:
    """`info RUN`: provenance, config (what differs from the defaults) and metrics of a run directory."""
    from emi_ray.engine.provenance import run_summary

    s = run_summary(run)
    if as_json:
        out.print_json(json.dumps(s, default=str))
        return
    p = s["provenance"]
    out.print(f"[bold]{s['path']}[/bold]  ({s['kind']} run)", highlight=False)
    if p is None:
        out.print("provenance: none recorded (provenance.json: made before emi-ray recorded it)")
    else:
        git = p.get("git_commit")
        git_s = "not a git checkout" if git is None else f"git {git[:12]}" + (" + uncommitted changes"
                                                                                 if p.get("git_dirty") else "")
        pk = p.get("packages") or {}
        out.print(f"command:    {p.get('command')}", highlight=False)
        out.print(f"made:       {p.get('created')} by emi-ray {p.get('emi_ray')} ({git_s}) in {p.get('cwd')}",
                  highlight=False)
        out.print("versions:   " + ", ".join([f"python {p.get('python')}"] + [f"{k} {pk[k]}" for k in
                                                                          ("torch", "ray", "optuna") if pk.get(k)]),
                  highlight=False)
        if p.get("features"):
            digest = p.get("features_manifest_sha256")
            note = {True: "  [yellow](the store's manifest has changed since)[/yellow]", False: "", None: ""}
            out.print(f"features:   {p['features']}  (manifest sha256 {(digest or '-')[:16]})"
                      f"{note[s['store_changed']]}", highlight=False)
        for r in p.get("resumed") or []:
            out.print(f"resumed:    {r.get('created')}: {r.get('command')}", highlight=False)
    changes = s["config_changes"]
    if s["config"] is not None:
        what = "config (differs from the defaults)" if {"data", "train"} & set(s["config"]) else "config"
        out.print(f"{what}: " + (", ".join(f"{k}={v}" for k, v in changes.items()) or "the defaults"),
                  highlight=False)
    _print_run_metrics(s["kind"], s["metrics"])


def _print_run_metrics(kind: str, m) -> None:
    if not isinstance(m, dict):
        out.print("metrics: none yet (the run has not finished)")
        return
    if kind == "search":
        b, c = m.get("best") or {}, m.get("counts") or {}
        out.print(f"trials: {c.get('total', '?')} ({c.get('complete', '?')} complete, {c.get('failed', '?')} failed); "
                  + (f"best: trial {b.get('number')}, validation mean r {b.get('mean_pearson'):.4f}"
                     if b.get("mean_pearson") is not None else "no best trial"), highlight=False)
        return
    if kind == "ablation":
        t = Table("table", "row", "mean r", "± std")
        for row in m.get("rows", []):
            t.add_row(row["table"], row["name"], f"{row['mean']:.4f}", f"{row['std']:.4f}")
        out.print(t)
        return
    scalars = {k: v for k, v in m.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
               and k != "run_dir"}
    out.print("metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in scalars.items()), highlight=False)
    if isinstance(m.get("per_emotion"), dict):
        print_scores({"mean_pearson": m.get("mean_pearson", 0.0), "per_emotion": m["per_emotion"]}, False)


def _stats_summary(norm) -> dict:
    import numpy as np

    return {m: {"shift": float(np.abs(norm.mean[m]).mean()),
                "scale": [float(np.min(norm.scale[m])), float(np.median(norm.scale[m])), float(np.max(norm.scale[m]))],
                "constant": norm.constant.get(m, 0)} for m in norm.mean}


@app.command()
@handles_errors
def score(
    preds: Path = typer.Argument(..., metavar="PREDS_CSV", help="Predictions in the submission format "
                                                                "(Filename + six emotions)."),
    labels: Path = typer.Argument(..., metavar="LABELS_CSV", help="Labels in the same format, e.g. "
                                                                  "DATA/valid_split.csv."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
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
