"""CLI commands for stage II: train, predict, evaluate, ablate (registered on cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from emi_ray.cli import app, err, handles_errors, notify, out, print_scores
from emi_ray.cli_choices import AblationTable, Split, complete_space, parse_space, space_metavar, value

SET_HELP = "Override a config value, e.g. --set model.dim=64 (repeatable)."
FEATURES_HELP = "Feature store: a directory or a URI such as s3://bucket/features"
DRY_RUN_HELP = ("Print the resolved config (YAML) and what would run (store, run directory, workers, GPUs), "
                "then exit without creating anything.")
STORAGE_HELP = ("Ray's storage for checkpoints and experiment state, e.g. s3://bucket/ray (default: RUN/ray); "
                "the run directory keeps the results.")


@app.command()
@handles_errors
def train(
    features: Optional[str] = typer.Option(None, "--features", help=f"{FEATURES_HELP} (default: built-in synthetic)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (sections data/model/train/stage1)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray Train workers (0 = in-process)."),
    gpus: Optional[float] = typer.Option(None, "--gpus-per-worker", help="GPUs per Ray Train worker "
                                                                         "(default: the config's, 0)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: EMI_RAY_HOME/runs/...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    folds: int = typer.Option(0, "--folds", help="K-fold cross-validation over train+valid (an ensemble of K)."),
    seeds: int = typer.Option(1, "--seeds", help="Train N seeds of the config as one ensemble run "
                                                 "(predict averages them)."),
    best: bool = typer.Option(False, "--best", help="Train the best config of the latest search."),
    space: Optional[str] = typer.Option(None, "--space", parser=parse_space, metavar=space_metavar(),
                                        autocompletion=complete_space,
                                        help="With --best: the search space's latest search."),
    from_run: Optional[Path] = typer.Option(None, "--from", help="With --best: a search run directory."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (or RAY_ADDRESS)."),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="EMI_RAY_STORAGE",
                                          help=STORAGE_HELP + " Takes effect with --workers >= 1."),
    as_json: bool = typer.Option(False, "--json", help="Print the best epoch's metrics as JSON."),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Train the stage-II fusion model with Ray Train; writes a run directory."""
    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.ray_env import init_ray

    from emi_ray.config import apply_overrides, load_config

    if best:
        from emi_ray.tune.best import best_config

        cfg, source = best_config(space, from_run)
        apply_overrides(cfg, sets)
        notify(f"training the best config of {source}")
    elif resume and out_dir is not None and config is None and (out_dir / "config.yaml").is_file():
        cfg = load_config(out_dir / "config.yaml", sets)  # --resume continues the run's own config
    else:
        cfg = load_config(config, sets)
    if workers is not None:
        cfg.train.workers = workers
    if gpus is not None:
        cfg.train.gpus_per_worker = gpus
    if dry_run:
        return _train_plan(cfg, features or cfg.data.features, out_dir, resume, folds, seeds, address, storage,
                           as_json)
    feats = resolve_features(features or cfg.data.features, notify)
    if cfg.train.workers > 0 or address:
        init_ray(address)
    if folds:
        from emi_ray.train.trainer import run_folds

        summary = run_folds(cfg, feats, folds, out_dir, resume, storage=storage)
        if as_json:
            out.print_json(json.dumps(summary))
        else:
            out.print(f"{folds}-fold CV mean r = {summary['mean_pearson']:.4f} ± {summary['std']:.4f} "
                      f"(folds: {', '.join(f'{s:.3f}' for s in summary['per_fold'])}); {summary['run_dir']}")
        return
    if seeds > 1:
        from emi_ray.train.trainer import run_seeds

        res = run_seeds(cfg, feats, seeds, out_dir, resume, storage,
                        on_member=lambda name, m: notify(f"{name}: validation mean r = {m['mean_pearson']:.4f}"))
        if as_json:
            out.print_json(json.dumps(res))
            return
        print_members(res)
        out.print(f"run directory: {res['run_dir']}\nnext: emi-ray predict {res['run_dir']} --out preds.csv")
        return
    from emi_ray.cli_progress import EpochProgress
    from emi_ray.train.trainer import run_training

    with EpochProgress(cfg.train.epochs, err, "train") as progress:
        res = run_training(cfg, feats, out_dir, resume, storage=storage, on_epoch=progress.on_epoch,
                           on_start=lambda d: notify(f"run directory: {d}"))
    if as_json:
        out.print_json(json.dumps({**res.metrics, "run_dir": str(res.run_dir)}))
        return
    m = res.metrics
    out.print(f"best epoch {m['epoch'] + 1} of {m['epochs_run']}: validation mean r = {m['mean_pearson']:.4f}")
    print_scores({"mean_pearson": m["mean_pearson"], "per_emotion": m["per_emotion"]}, False,
                 reference=(m.get("baseline") or {}).get("per_emotion"), reference_name="ridge baseline")
    out.print(f"run directory: {res.run_dir}\nnext: emi-ray predict {res.run_dir} --out preds.csv")


def _train_plan(cfg, features, out_dir, resume, folds, seeds, address, storage, as_json) -> None:
    """`train --dry-run`: the config and what would run; creates nothing (not even the default store)."""
    from emi_ray.cli_plan import planned_features, print_plan
    from emi_ray.config import validate
    from emi_ray.engine.rundir import new_run_dir

    where = planned_features(features)
    cfg.data.features = where["features"]
    validate(cfg)
    what = (f"{folds}-fold cross-validation (fold-0..fold-{folds - 1})" if folds
            else f"an ensemble of {seeds} seeds" if seeds > 1 else "one run")
    run_dir = out_dir or new_run_dir("cv" if folds else "ensemble" if seeds > 1 else "train")
    w = cfg.train.workers
    print_plan("train", cfg.to_dict(), {
        **where, "run_dir": str(run_dir), "resume": resume, "runs": what, "epochs": cfg.train.epochs,
        "workers": f"{w} Ray Train worker{'s' if w != 1 else ''}" if w else "0 (in-process, no Ray Train)",
        "gpus_per_worker": cfg.train.gpus_per_worker, "address": address, "storage": storage}, as_json)


RUNS_HELP = ("Train, baseline or ensemble run directories; several are averaged as one ensemble "
             "(default: the latest finished train run).")


def _runs_or_latest(runs: Optional[list[Path]]) -> list[Path]:
    if runs:
        return list(runs)
    from emi_ray.train.predict import latest_run

    run = latest_run()
    notify(f"no RUN given: using the latest train run {run}")
    return [run]


@app.command()
@handles_errors
def predict(
    runs: Optional[list[Path]] = typer.Argument(None, metavar="[RUN...]", help=RUNS_HELP),
    features: Optional[str] = typer.Option(None, "--features", help=f"{FEATURES_HELP} to predict (default: the "
                                                                    f"run's)."),
    split: Split = typer.Option(Split.test, "--split", help="The split to predict."),
    out_csv: Path = typer.Option(Path("preds.csv"), "--out", help="Submission CSV to write."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written (file, rows, split, runs) as JSON."),
) -> None:
    """Write predictions in the submission format (sorted by Filename, clipped to [0, 1]).
    Several runs, or an ensemble run (--seeds, --folds), average their members' predictions."""
    from emi_ray.train.ensemble import member_runs, write_predictions

    runs = _runs_or_latest(runs)
    split = value(split)
    n = write_predictions(runs, out_csv, features, split)
    members = len(member_runs(runs))
    if as_json:
        out.print_json(json.dumps({"out": str(out_csv), "predictions": n, "split": split, "members": members,
                                   "runs": [str(r) for r in runs]}))
        return
    what = f"the average of {members} runs" if members > 1 else "1 run"
    out.print(f"wrote {n} predictions ({split}, {what}) to {out_csv}")


@app.command()
@handles_errors
def evaluate(
    runs: Optional[list[Path]] = typer.Argument(None, metavar="[RUN...]", help=RUNS_HELP),
    features: Optional[str] = typer.Option(None, "--features", help=f"{FEATURES_HELP} (default: the run's)."),
    split: Split = typer.Option(Split.valid, "--split", help="The labelled split to score."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores (and each member's) as JSON."),
) -> None:
    """Score a run's best model (or an ensemble's average and each member) on a labelled split."""
    from emi_ray.train.ensemble import evaluate_members

    res = evaluate_members(_runs_or_latest(runs), features, value(split))
    if as_json:
        out.print_json(json.dumps(res))
    elif len(res["members"]) > 1:
        print_members(res)
    else:
        print_scores(res, False)


def print_members(res: dict) -> None:
    """An ensemble's members and their average, one row each."""
    t = Table("run", f"{res.get('split', 'valid')} mean r")
    for name, r in res["members"].items():
        t.add_row(name, f"{r:.4f}")
    t.add_row("members: mean ± std", f"{res['member_mean']:.4f} ± {res['member_std']:.4f}")
    t.add_row(Text(f"ensemble of {len(res['members'])}", "bold"), Text(f"{res['mean_pearson']:.4f}", "bold"))
    out.print(t)


@app.command()
@handles_errors
def ablate(
    features: Optional[str] = typer.Option(None, "--features", help=f"{FEATURES_HELP} (default: built-in "
                                                                    f"synthetic)."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per row (train.seed, +1, ...)."),
    table: AblationTable = typer.Option(AblationTable.both, "--table",
                                        help="modules (Table 3), modalities (Table 4), both, or architectures "
                                             "(the leaderboard's designs, docs/designs.md)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Base config YAML every row starts from "
                                                                 "(sections data/model/train)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="Ray CPUs each row x seed trial reserves."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="GPUs each row x seed trial reserves "
                                                                       "(e.g. 0.5: two trials share a GPU)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Ablation directory (default: "
                                                               "EMI_RAY_HOME/runs/ablate-...)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (or RAY_ADDRESS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows (mean, std, scores, paper) as JSON."),
) -> None:
    """Train the paper's ablation rows (Tables 3 and 4) or the leaderboard's designs over seeds; Markdown
    table + bar chart."""
    from emi_ray.config import load_config
    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.ray_env import init_ray
    from emi_ray.tune.ablation import run_ablation

    base = load_config(config, sets)
    feats = resolve_features(features or base.data.features, notify)
    init_ray(address)  # joins --address / RAY_ADDRESS, else a local Ray (run_ablation reuses it)
    res = run_ablation(base, feats, seeds=seeds, tables=value(table), out_dir=out_dir, cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=gpus_per_trial, progress=_ablation_progress)
    failed = sum(r["failed"] for r in res["rows"])
    if as_json:
        out.print_json(json.dumps(res, default=str))
    else:
        t = Table("table", "row", "mean r", "± std", "seeds")
        for row in res["rows"]:
            ok = len(row["scores"]) - row["failed"]
            if row["mean"] is None:
                t.add_row(row["table"], row["name"], Text("failed", "red"), "", f"0/{len(row['scores'])}")
            else:
                t.add_row(row["table"], row["name"], f"{row['mean']:.4f}", f"{row['std']:.4f}",
                          f"{ok}/{len(row['scores'])}")
            if row["failed"]:
                t.add_row("", "", Text(row["error"], "red"), "", "")
        out.print(t)
        wrote = [res["markdown"]] + ([res["chart"]] if Path(res["chart"]).is_file() else [])
        out.print("written: " + " and ".join(wrote), highlight=False)
    if failed:
        err.print(f"{failed} (row, seed) run(s) failed (errors in the table; a trial's traceback is in "
                  f"{Path(res['markdown']).parent}/ray/trial_*/error.txt)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _ablation_progress(u: dict) -> None:
    """One line per ablation (row, seed) as it ends, with the row's mean ± std over its seeds so far."""
    what = Text(f"r = {u['score']:.4f}") if u["score"] is not None else Text.assemble(("FAILED", "red"),
                                                                                      f": {u['error']}")
    row = (f"{u['mean']:.4f} ± {u['std']:.4f}" if u["mean"] is not None else "no score yet")
    failed = f", {u['failed']} failed" if u["failed"] else ""
    err.print(Text.assemble(f"  {u['name']} seed {u['seed']}: ", what, f"   ({u['name']}: {row} over {u['done']} of "
                            f"{u['seeds']} seeds done{failed})"), highlight=False, soft_wrap=True)
