"""`emi-ray extract` (registered on cli.app): build the request, show the bar, print the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emi_ray.cli import app, command_line, err, handles_errors, out
from emi_ray.cli_choices import AudioEncoder, Preset, TextEncoder, Transcriber, VideoEncoder, value


@app.command()
@handles_errors
# long only for its options: the body builds a request, shows the bar and prints the summary
def extract(
    data: Path = typer.Argument(..., help="Hume-Vidmimic2-layout dataset directory."),
    out_dir: str = typer.Option(..., "--out", help="Feature store directory (or URI, e.g. s3://bucket/features) "
                                                  "to create or resume."),
    preset: Preset = typer.Option(Preset.organiser, "--preset",
                               help="organiser: import vit/wav2vec2 pickles + text; lite: weight-free encoders "
                                    "on raw media; paper: clip + wav2vec2 + whisper + bert, leaders: clip + wavlm + "
                                    "whisper + text-lm, from local paths (--models)."),
    video_encoder: Optional[VideoEncoder] = typer.Option(None, "--video-encoder",
                                                         help="Video encoder (media presets; default: the preset's)."),
    audio_encoder: Optional[AudioEncoder] = typer.Option(None, "--audio-encoder",
                                                         help="Audio encoder (media presets; default: the preset's)."),
    text_encoder: Optional[TextEncoder] = typer.Option(None, "--text-encoder",
                                                       help="Text encoder (default: the preset's; organiser: hash)."),
    transcriber: Optional[Transcriber] = typer.Option(None, "--transcriber",
                                                      help="Speech to text (none: read text/<id>.txt if present)."),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML of local model paths: clip: FILE, "
                                          "wav2vec2|wavlm|hubert: DIR, whisper: DIR, bert|text-lm: DIR."),
    text_model: Optional[Path] = typer.Option(None, "--text-model", help="Local dir of the text encoder (bert, or any "
                                                                           "transformers model for text-lm)."),
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
    force: bool = typer.Option(False, "--force", help="Write the store into OUT even if OUT is neither empty nor a "
                                                      "feature store (nothing in it is deleted)."),
    max_file_mb: Optional[float] = typer.Option(None, "--max-file-mb", help="Largest input file read, in MB "
                                                "(default 2048); a larger one is an errors.csv row."),
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
        transcripts=transcripts, address=address, skip_bad=skip_bad, command=command_line(), progress=bar.update,
        force=force, max_file_mb=max_file_mb)

    def extracted(result) -> None:
        bar.close()
        s = result.summary
        if not as_json:
            out.print(f"{result.store}: {s.done} done, {s.skipped} skipped (already stored), "
                      f"{s.failed} failed", highlight=False)

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
        out.print((f"{result.out}: {', '.join(result.aligned['modalities'])} mapped through the stage-I heads "
                         f"of {aligned}"), highlight=False)
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

            columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())
            self.bar = Progress(*columns, console=err, transient=self.transient)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=None)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
