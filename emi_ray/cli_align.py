"""CLI commands for stage I: synth-affect, pretrain, align-apply (registered on cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emi_ray.cli import app, handles_errors, notify, out

SET_HELP = "Override a config value, e.g. --set stage1.lr_max=3e-3 (repeatable)."


@app.command("synth-affect")
@handles_errors
def synth_affect(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Directory to write the affect corpus into."),
    items: int = typer.Option(600, "--items", "-n", help="Annotated items per modality."),
    modality: str = typer.Option("both", "--modality", help="vision, audio or both."),
    noisy: float = typer.Option(0.15, "--noisy", help="Fraction of mislabelled items (raters disagree)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic affect corpus (face images, voice clips, affect.csv) for stage I."""
    import time

    from emi_ray.align.synth import write_affect_corpus
    from emi_ray.errors import EmiError

    mods = {"both": ("vision", "audio"), "vision": ("vision",), "audio": ("audio",)}.get(modality)
    if mods is None:
        raise EmiError(f"--modality {modality!r}: choose vision, audio or both")
    t0 = time.perf_counter()
    rows = write_affect_corpus(out_dir, n=items, seed=seed, modalities=mods, noisy=noisy)
    out.print(f"wrote {len(rows)} rows ({', '.join(mods)}) to {out_dir / 'affect.csv'} "
              f"in {time.perf_counter() - t0:.1f}s\nnext: emi-ray pretrain --affect {out_dir}")


@app.command()
@handles_errors
def pretrain(
    affect: Optional[Path] = typer.Option(None, "--affect", help="Affect corpus dir (default: built-in synthetic)."),
    modality: str = typer.Option("both", "--modality", help="vision, audio or both."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (section stage1)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (0 = in-process)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: EMI_RAY_HOME/runs/...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    video_encoder: str = typer.Option("lite", "--video-encoder", help="lite or clip (frozen)."),
    audio_encoder: str = typer.Option("lite", "--audio-encoder", help="lite or wav2vec2 (frozen)."),
    text_encoder: str = typer.Option("hash", "--text-encoder", help="hash or bert (frozen)."),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML of local model paths (clip, wav2vec2, bert)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (or RAY_ADDRESS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the best epoch's metrics as JSON."),
) -> None:
    """Stage I: contrastive modality-text alignment of projection heads (Ray Train)."""
    from emi_ray.align.features import Encoders
    from emi_ray.align.trainer import run_pretrain
    from emi_ray.config import load_config

    if resume and out_dir is not None and config is None and (out_dir / "config.yaml").is_file():
        cfg = load_config(out_dir / "config.yaml", sets)
    else:
        cfg = load_config(config, sets)
    if workers is not None:
        cfg.train.workers = workers
    if cfg.train.workers > 0 or address:
        from emi_ray.ray_env import init_ray

        init_ray(address)
    encoders = Encoders.choose(video_encoder, audio_encoder, text_encoder, models)
    res = run_pretrain(cfg, affect, modality, encoders, out_dir, resume, notify=notify)
    m = res.metrics
    if as_json:
        out.print_json(json.dumps({**m, "run_dir": str(res.run_dir)}))
        return
    out.print(f"best epoch {m['epoch']} of {m['epochs_run']} (held-out modality->text retrieval):")
    for mod in ("vision", "audio"):
        if f"{mod}_r1" in m:
            out.print(f"  {mod}: recall@1 {m[f'{mod}_r1']:.3f} (chance {m[f'{mod}_chance_r1']:.3f}), "
                      f"recall@5 {m[f'{mod}_r5']:.3f}, expression acc {m[f'{mod}_expr_acc']:.3f}")
    out.print(f"run directory: {res.run_dir}\n"
              f"next: emi-ray align-apply FEATURES {res.run_dir} ALIGNED_FEATURES")


@app.command("align-apply")
@handles_errors
def align_apply(
    features: Path = typer.Argument(..., metavar="FEATURES", help="Feature store to map."),
    run: Path = typer.Argument(..., metavar="RUN", help="A pretrain run directory."),
    out_store: Path = typer.Argument(..., metavar="OUT", help="New feature store to write."),
) -> None:
    """Apply a stage-I run's heads to a feature store (extracted with the same encoders)."""
    from emi_ray.align.apply import apply_heads

    rec = apply_heads(features, run, out_store)
    out.print(f"wrote {out_store}: {', '.join(rec['modalities'])} mapped through {run}\n"
              f"next: emi-ray train --features {out_store}")
