"""CLI command `emi-ray baseline`: the ridge reference score on a feature store (registered on cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emi_ray.cli import app, handles_errors, notify, out, print_scores

FEATURES_HELP = "Feature store: a directory or a URI such as s3://bucket/features"


@app.command()
@handles_errors
def baseline(
    features: Optional[str] = typer.Option(None, "--features", help=f"{FEATURES_HELP} (default: built-in synthetic)."),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="Comma-separated, e.g. video,audio,text "
                                                                         "(default: all the store has)."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds on the train split that choose λ."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold shuffle."),
    out_dir: Optional[Path] = typer.Option(None, "--out",
                                           help="Run directory (default: EMI_RAY_HOME/runs/baseline-...)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json (+ run_dir) as JSON."),
) -> None:
    """Ridge regression on mean-pooled features (λ by K-fold CV): the reference score; writes a run directory."""
    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.train.baseline import run_baseline

    mods = None if modalities is None else [m.strip() for m in modalities.split(",") if m.strip()]
    feats = resolve_features(features, notify)
    res = run_baseline(feats, out_dir, mods, folds=folds, seed=seed)
    if as_json:
        out.print_json(json.dumps(res))
        return
    out.print(f"ridge on mean-pooled {'+'.join(res['modalities'])}: λ = {res['alpha']:g} "
              f"({folds}-fold CV on {res['train_videos']} train clips: mean r = {res['cv_mean_pearson']:.4f})")
    out.print(f"validation mean r = {res['mean_pearson']:.4f} ({res['videos']} clips)")
    print_scores({"mean_pearson": res["mean_pearson"], "per_emotion": res["per_emotion"]}, False)
    out.print(f"run directory: {res['run_dir']}\nnext: emi-ray predict {res['run_dir']}")
