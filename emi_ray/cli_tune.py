"""CLI command `emi-ray tune` (registered on cli.app): Ray Tune + Optuna over a search space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from emi_ray.cli import app, err, handles_errors, notify, out

SET_HELP = "Override a base config value for every trial, e.g. --set data.max_len=32 (repeatable)."


@app.command()
@handles_errors
def tune(
    space: Optional[str] = typer.Option(None, "--space", help="Search space: a name (see --list-spaces) or a "
                                                               "YAML file. Default: fusion."),
    features: Optional[Path] = typer.Option(None, "--features", help="Feature store (default: built-in synthetic)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Number of trials (default: the space's)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Trials at once (default: the space's)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epochs per trial; ASHA stops weak "
                                                                        "trials earlier (default: the space's)."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial"),
    seed: int = typer.Option(0, "--seed", help="Seeds the TPE sampler and every trial's training."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Search run directory "
                                                               "(default: EMI_RAY_HOME/runs/tune-SPACE-...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search: --out RUN, or the "
                                                        "latest search of --space."),
    list_spaces: bool = typer.Option(False, "--list-spaces", help="Show the named search spaces and exit."),
    confirm_seeds: int = typer.Option(0, "--confirm-seeds", help="Re-train the top-3 configs with this many "
                                                                 "seeds each; choose the best by the mean."),
    config: Optional[Path] = typer.Option(None, "--config", help="Base config YAML for every trial."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (or RAY_ADDRESS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Search hyper-parameters (Ray Tune, Optuna TPE, ASHA); writes best.yaml for `train --best`."""
    if list_spaces:
        _print_spaces()
        return
    from emi_ray.config import load_config
    from emi_ray.tune.search import run_search

    base = load_config(config) if config else None  # then the space's `fixed`, then --set
    if resume and (trials or concurrency or max_epochs or features or config or sets):
        notify("--resume: using the settings stored in the search's search.json")

    def started(s) -> None:
        verb = "resuming" if s.resumed else "searching"
        out.print(f"{verb} space [bold]{s.space}[/bold]: {s.trials} trials, up to {s.max_epochs} epochs each, "
                  f"{s.concurrency} at a time", highlight=False)
        out.print(f"run directory:  {s.run_dir}", highlight=False)
        out.print(f"watch trials:   {s.dashboard_command}", highlight=False, soft_wrap=True)
        out.print(f"Ray dashboard:  {s.ray_dashboard or '(not available)'}", highlight=False)

    res = run_search(space or "fusion", features, trials=trials, concurrency=concurrency, max_epochs=max_epochs,
                     cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, seed=seed, out=out_dir,
                     resume=resume, confirm_seeds=confirm_seeds, base=base, overrides=sets, address=address, notify=notify,
                     on_start=started)
    if as_json:
        out.print_json(json.loads((res.files["summary"]).read_text()))
        return
    _print_result(res)
    if res.interrupted:
        raise typer.Exit(1)


def _print_spaces() -> None:
    from emi_ray.tune.spaces import list_spaces, spaces_dir

    out.print(f"search spaces in {spaces_dir()}:\n", highlight=False)
    for s in list_spaces():
        if "error" in s:
            out.print(f"[bold]{s['name']}[/bold]  [red]invalid:[/red] {s['error']}\n", highlight=False)
            continue
        sched = s["scheduler"]
        sched_s = (f"ASHA grace {sched['grace_period']}, factor {sched['reduction_factor']}"
                   if sched["kind"] == "asha" else "no early stopping")
        note = "" if s["runnable"] else "  [red](not runnable yet)[/red]"
        out.print(f"[bold]{s['name']}[/bold]  {s['description']}{note}", highlight=False)
        out.print(f"    {s['trials']} trials x up to {s['max_epochs']} epochs, {s['concurrency']} at a time; "
                  f"{sched_s}", highlight=False)
        width = max(len(k) for k in s["params"])
        for k, v in s["params"].items():
            out.print(f"    {k:<{width}}  {v}", highlight=False)
        out.print("")
    out.print("use: emi-ray tune --space NAME   (or --space my_space.yaml)")


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _print_result(res) -> None:
    c = res.counts
    keys = sorted({k for r in res.trials for k in r["params"]})
    t = Table("#", "trial", "mean r", "best ep", "epochs", *[k.split(".", 1)[1] for k in keys],
              title=f"top trials of {res.space} (validation mean Pearson r, best epoch)")
    for r in res.top[:10]:
        t.add_row(str(r["number"]), r["trial_id"], f"{r['mean_pearson']:.4f}", str(r["best_epoch"]),
                  str(r["epochs"]), *[_fmt(r["params"].get(k, "")) for k in keys])
    out.print(t)
    out.print(f"{c['total']} trials: {c['complete']} ran all epochs, {c['stopped early']} stopped early by ASHA, "
              f"{c['failed']} failed" + (f", {c['unfinished']} unfinished" if c.get("unfinished") else "")
              + f"  ({res.elapsed_s / 60:.1f} min)", highlight=False)
    for r in [r for r in res.trials if r["status"] == "failed"][:5]:
        err.print(f"  failed trial {r['number']} ({r['trial_id']}): {r['error']}", highlight=False, soft_wrap=True)
    if res.confirm:
        ct = Table("trial", "search r", "seeds", "scores", "mean r", "± std", title="confirmation by seed")
        for row in res.confirm:
            ct.add_row(str(row["number"]), f"{row['search_r']:.4f}", ", ".join(map(str, row["seeds"])),
                       ", ".join("-" if s is None else f"{s:.3f}" for s in row["scores"]),
                       "-" if row["mean"] is None else f"{row['mean']:.4f}",
                       "-" if row["std"] is None else f"{row['std']:.4f}")
        out.print(ct)
    files = [f"{p}" for k, p in res.files.items() if p.exists()]
    out.print("written: " + ", ".join(Path(f).name for f in files) + f" in {res.run_dir}", highlight=False)
    if res.best is None:
        out.print("no trial produced a score, so there is no best config; see trials.csv for the errors")
        return
    b = res.best
    how = (f"mean r {b['confirm']['mean']:.4f} over seeds {b['confirm']['seeds']}" if b.get("confirm")
           else f"validation mean r {b['mean_pearson']:.4f}")
    out.print(f"best: trial {b['number']} ({how}) -> {res.files['best_yaml']}", highlight=False)
    out.print(f"next: emi-ray train --best --space {res.space}     (or --from {res.run_dir})\n"
              f"      emi-ray predict RUN --out preds.csv          (RUN: the directory train prints)",
              highlight=False)
