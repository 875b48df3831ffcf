"""CLI commands for stage I: synth-affect, pretrain, align-apply (registered on cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emi_ray.cli import app, err, handles_errors, notify, out
from emi_ray.cli_choices import Modality, StageAudioEncoder, StageTextEncoder, StageVideoEncoder, value

SET_HELP = "Override a config value, e.g. --set stage1.lr_max=3e-3 (repeatable)."


@app.command("synth-affect")
@handles_errors
def synth_affect(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Directory to write the affect corpus into."),
    items: int = typer.Option(600, "--items", "-n", help="Annotated items per modality."),
    modality: Modality = typer.Option(Modality.both, "--modality", help="Which modalities to write."),
    noisy: float = typer.Option(0.15, "--noisy", help="Fraction of mislabelled items (raters disagree)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the corpus."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a synthetic affect corpus (face images, voice clips, affect.csv) for stage I."""
    import time

    from emi_ray.align.synth import write_affect_corpus
    from emi_ray.errors import EmiError

    modality = value(Modality(modality))  # `synth --affect` passes a plain string
    mods = {"both": ("vision", "audio"), "vision": ("vision",), "audio": ("audio",)}.get(modality)
    if mods is None:
        raise EmiError(f"--modality {modality!r}: choose vision, audio or both")
    t0 = time.perf_counter()
    rows = write_affect_corpus(out_dir, n=items, seed=seed, modalities=mods, noisy=noisy)
    if as_json:
        out.print_json(json.dumps({"out": str(out_dir), "csv": str(out_dir / "affect.csv"), "rows": len(rows),
                                   "modalities": list(mods), "noisy": noisy, "seed": seed,
                                   "seconds": round(time.perf_counter() - t0, 3)}))
        return
    out.print(f"wrote {len(rows)} rows ({', '.join(mods)}) to {out_dir / 'affect.csv'} "
              f"in {time.perf_counter() - t0:.1f}s\nnext: emi-ray pretrain --affect {out_dir}")


@app.command()
@handles_errors
def pretrain(
    affect: Optional[Path] = typer.Option(None, "--affect", help="Affect corpus dir (default: built-in synthetic)."),
    modality: Modality = typer.Option(Modality.both, "--modality", help="Which modalities to align with text."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (section stage1)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (0 = in-process)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: EMI_RAY_HOME/runs/...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    video_encoder: StageVideoEncoder = typer.Option(StageVideoEncoder.lite, "--video-encoder",
                                                    help="Frozen vision encoder."),
    audio_encoder: StageAudioEncoder = typer.Option(StageAudioEncoder.lite, "--audio-encoder",
                                                    help="Frozen audio encoder."),
    text_encoder: StageTextEncoder = typer.Option(StageTextEncoder.hash, "--text-encoder",
                                                  help="Frozen text encoder."),
    models: Optional[Path] = typer.Option(None, "--models", help="YAML of local model paths (clip, wav2vec2, bert)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (or RAY_ADDRESS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the best epoch's metrics as JSON."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config (YAML) and what would run "
                                                          "(corpus, encoders, run directory, workers), then exit "
                                                          "without creating anything."),
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
    modality, video_encoder, audio_encoder = value(modality), value(video_encoder), value(audio_encoder)
    text_encoder = value(text_encoder)
    if dry_run:
        return _pretrain_plan(cfg, affect, modality, (video_encoder, audio_encoder, text_encoder), models, out_dir,
                              resume, address, as_json)
    if cfg.train.workers > 0 or address:
        from emi_ray.ray_env import init_ray

        init_ray(address)
    encoders = Encoders.choose(video_encoder, audio_encoder, text_encoder, models)
    from emi_ray.cli_progress import EpochProgress

    with EpochProgress(cfg.stage1.epochs, err, "pretrain") as progress:
        res = run_pretrain(cfg, affect, modality, encoders, out_dir, resume, notify=notify,
                           on_epoch=progress.on_epoch)
    m = res.metrics
    if m.get("weights", {}).get("noop"):
        notify(NOOP_WEIGHTS)
    if as_json:
        out.print_json(json.dumps({**m, "run_dir": str(res.run_dir)}))
        return
    _print_weights(m.get("weights"))
    out.print(f"best epoch {m['epoch'] + 1} of {m['epochs_run']} (held-out modality->text retrieval):")
    for mod in ("vision", "audio"):
        if f"{mod}_r1" in m:
            out.print(f"  {mod}: recall@1 {m[f'{mod}_r1']:.3f} (chance {m[f'{mod}_chance_r1']:.3f}), "
                      f"recall@5 {m[f'{mod}_r5']:.3f}, expression acc {m[f'{mod}_expr_acc']:.3f}")
    out.print(f"run directory: {res.run_dir}\n"
              f"next: emi-ray align-apply FEATURES {res.run_dir} ALIGNED_FEATURES")


NOOP_WEIGHTS = ("warning: stage1.weighted=true, but every confidence weight of this corpus is 1 (no rater or "
                "spread columns): the weighting is a no-op")


def _print_weights(w: dict | None) -> None:
    """The confidence weights w_i the run trained with, per modality (training items)."""
    if not w:
        return
    use = "used" if w["weighted"] else "not used: stage1.weighted=false"
    out.print(f"confidence weights w_i of the training items ({use}):")
    for mod in ("vision", "audio"):
        if mod in w:
            s = w[mod]
            out.print(f"  {mod}: n {s['n']}, min {s['min']:.3f} / median {s['median']:.3f} / max {s['max']:.3f}, "
                      f"w = 1 for {100 * s['share_1']:.0f}%")


def _pretrain_plan(cfg, affect, modality, names, models, out_dir, resume, address, as_json) -> None:
    """`pretrain --dry-run`: the config and what would run; creates nothing (not the default corpus either)."""
    from emi_ray.align.trainer import default_corpus_dir
    from emi_ray.cli_plan import print_plan
    from emi_ray.config import validate
    from emi_ray.engine.rundir import new_run_dir

    validate(cfg)
    corpus = (affect or default_corpus_dir()).expanduser().resolve()
    w = cfg.train.workers
    print_plan("pretrain", cfg.to_dict(), {
        "corpus": str(corpus), "corpus_exists": (corpus / "affect.csv").is_file(), "corpus_default": affect is None,
        "modality": modality, "encoders": dict(zip(("vision", "audio", "text"), names)),
        "models": None if models is None else str(models), "run_dir": str(out_dir or new_run_dir("pretrain")),
        "resume": resume, "epochs": cfg.stage1.epochs,
        "workers": f"{w} Ray Train worker{'s' if w != 1 else ''}" if w else "0 (in-process, no Ray Train)",
        "address": address}, as_json)


@app.command("align-apply")
@handles_errors
def align_apply(
    paths: list[Path] = typer.Argument(..., metavar="[FEATURES] RUN OUT",
                                       help="The feature store to map (or give it as --features), a pretrain run "
                                            "directory, and the new feature store to write."),
    features: Optional[Path] = typer.Option(None, "--features", help="Feature store to map (the same as the "
                                                                     "FEATURES argument)."),
    as_json: bool = typer.Option(False, "--json", help="Print the new store's record as JSON."),
) -> None:
    """Apply a stage-I run's heads to a feature store (extracted with the same encoders)."""
    from emi_ray.align.apply import apply_heads

    want = 2 if features is not None else 3
    if len(paths) != want:
        raise typer.BadParameter(f"expected {'RUN OUT (with --features)' if want == 2 else 'FEATURES RUN OUT'}, "
                                 f"got {len(paths)} path(s)", param_hint="[FEATURES] RUN OUT")
    features, run, out_store = (features, *paths) if want == 2 else paths
    rec = apply_heads(features, run, out_store)
    if as_json:
        out.print_json(json.dumps({**rec, "out": str(out_store), "features": str(features), "run": str(run)},
                                  default=str))
        return
    out.print(f"wrote {out_store}: {', '.join(rec['modalities'])} mapped through {run}\n"
              f"next: emi-ray train --features {out_store}")
