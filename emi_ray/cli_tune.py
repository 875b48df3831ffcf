"""CLI command `emi-ray tune` (registered on cli.app): Ray Tune + Optuna over a search space."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from emi_ray.cli import app, err, handles_errors, notify, out
from emi_ray.cli_choices import complete_space, parse_space, space_metavar

SET_HELP = "Override a base config value for every trial, e.g. --set data.max_len=32 (repeatable)."


@app.command()
@handles_errors
def tune(
    space: Optional[str] = typer.Option(None, "--space", parser=parse_space, metavar=space_metavar(),
                                        autocompletion=complete_space,
                                        help="Search space: a name (see --list-spaces) or a YAML file. "
                                             "Default: fusion."),
    features: Optional[str] = typer.Option(None, "--features", help="Feature store: a directory or a URI such as "
                                                                    "s3://bucket/features (default: built-in "
                                                                    "synthetic)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Number of trials (default: the space's)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Trials at once (default: the space's)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epochs per trial; ASHA stops weak "
                                                                        "trials earlier (default: the space's)."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="Ray CPUs each trial reserves."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="GPUs each trial reserves (e.g. 0.5: two "
                                                                       "trials share a GPU)."),
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
    storage: Optional[str] = typer.Option(None, "--storage", envvar="EMI_RAY_STORAGE",
                                          help="Where the Tune experiments go, e.g. s3://bucket/runs (default: "
                                               "RUN/ray), with copies of optuna.db (after every ended trial) and "
                                               "the result files; RUN keeps the study and the results."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the trials' base config (YAML) and what would "
                                                          "run (store, run directory, space, trials, resources), "
                                                          "then exit without creating anything."),
) -> None:
    """Search hyper-parameters (Ray Tune, Optuna TPE, ASHA); writes best.yaml for `train --best`."""
    if list_spaces:
        _print_spaces()
        return
    if dry_run:
        from emi_ray.cli_plan import tune_plan

        return tune_plan(dict(locals()))
    # The search stack (Ray, Optuna, torch) loads only when a search runs: `emi-ray --help` stays fast.
    from emi_ray.config import load_config
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest
    from emi_ray.tune.spaces import load_space
    from emi_ray.workflows.default_store import resolve_features

    base = load_config(config) if config else None  # then the space's `fixed`, then --set
    if resume and (trials or concurrency or max_epochs or features or config or sets or storage):
        notify("--resume: using the settings stored in the search's search.json")
    feats = None
    if not resume:  # stage-I trials align encoder features: their default store is extracted from synthetic media
        feats = resolve_features(features, notify, media=bool(load_space(space or "fusion").stage1_keys()))

    seen: dict[str, Path] = {}

    def started(s) -> None:
        seen["run_dir"] = s.run_dir
        _print_start(s, err if as_json else out)  # --json: stdout holds only the summary

    request = SearchRequest(space=space or "fusion", features=feats, trials=trials, concurrency=concurrency,
                            max_epochs=max_epochs, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                            seed=seed, out=out_dir, resume=resume, confirm_seeds=confirm_seeds, base=base,
                            overrides=list(sets or []), address=address, storage=storage)
    console = TrialConsole(err)
    try:
        res = run_search(request, notify=notify, on_start=started, on_event=console.event)
    except KeyboardInterrupt:
        console.close()
        if "run_dir" in seen:
            err.print(f"interrupted; continue with: emi-ray tune --resume --out {seen['run_dir']}", highlight=False)
        raise typer.Exit(130) from None
    finally:
        console.close()
    if as_json:
        out.print_json(res.files["summary"].read_text())
        return
    _print_result(res)
    if res.interrupted:
        raise typer.Exit(1)


class TrialConsole:
    """A search's (or grid's) trials as they run: on a terminal a live table (running trials, the latest
    ended ones, the best so far, the ETA) under the lines of the ended trials; otherwise (a pipe, a log,
    CI) one plain line per trial start and epoch. Fed the trial events (each with data["board"])."""

    def __init__(self, con, recent: int = 5):
        self.con, self.recent, self.live = con, recent, None

    def event(self, kind: str, data: dict) -> None:
        board = data.get("board")
        if board is None:
            return
        if not self.con.is_terminal:
            line = board.line(kind, data)
            if line:
                self.con.print(line, highlight=False, soft_wrap=True)
            return
        if self.live is None:
            from rich.live import Live

            self.live = Live(console=self.con, transient=True, refresh_per_second=2)
            self.live.start()
        self.live.update(self.table(board), refresh=True)

    def table(self, board) -> Table:
        best = board.best
        head = (f"{board.what}s: {board.done}/{board.total} ended, {len(board.running)} running; best so far "
                + (f"{best.best:.4f} ({best.trial_id})" if best is not None else "n/a")
                + f"; {_duration(board.elapsed_s())} elapsed, {board.eta()}")
        t = Table("trial", "status", "epoch", "r", "best r", "params", title=head, title_justify="left")
        for tr in board.running + board.ended[: self.recent]:
            status = Text("running", "green") if tr.status == "running" else (
                Text.assemble(("failed", "red"), f": {tr.error[:60]}") if tr.status == "failed" else tr.status)
            t.add_row(tr.trial_id, status, f"{tr.epochs}/{board.max_epochs}",
                      "" if tr.r is None else f"{tr.r:.4f}", "" if tr.best is None else f"{tr.best:.4f}",
                      tr.params)
        return t

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _duration(s: float) -> str:
    from emi_ray.tune.events import duration  # loaded with the search stack already

    return duration(s)


def _print_start(s, con) -> None:
    """What a search shows as it starts (a tune.search.SearchStart)."""
    verb = "resuming" if s.resumed else "searching"
    con.print(Text.assemble(f"{verb} space ", (s.space, "bold"), f": {s.trials} trials, up to {s.max_epochs} epochs "
                            f"each, {s.concurrency} at a time"), highlight=False)
    con.print(f"run directory:  {s.run_dir}", highlight=False)
    con.print(f"watch trials:   {s.dashboard_command}", highlight=False, soft_wrap=True)
    con.print(f"Ray dashboard:  {s.ray_dashboard or '(not available)'}", highlight=False)
    if s.ray_storage:
        con.print(f"Ray storage:    {s.ray_storage}  (emi-ray dashboard {s.ray_storage})", highlight=False)


def _print_spaces() -> None:
    from emi_ray.tune.spaces import list_spaces, spaces_dir  # Optuna loads only for --list-spaces

    out.print(f"search spaces in {spaces_dir()}:\n", highlight=False)
    for s in list_spaces():
        if "error" in s:
            out.print(Text.assemble((s["name"], "bold"), "  ", ("invalid:", "red"), f" {s['error']}\n"), highlight=False)
            continue
        sched = s["scheduler"]
        sched_s = (f"ASHA grace {sched['grace_period']}, factor {sched['reduction_factor']}"
                   if sched["kind"] == "asha" else "no early stopping")
        note = "  (trials pretrain stage I: needs media-encoder features)" if s["needs_media_features"] else ""
        out.print(Text.assemble((s["name"], "bold"), f"  {s['description']}{note}"), highlight=False)
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
    t = Table("#", "mean r", "epochs", "params", title=f"top trials of {res.space} (validation mean Pearson r "
                                                        f"at the best epoch; epochs: best/run; trials that ran "
                                                        f"all epochs first, then those ASHA stopped)")
    for r in res.top[:10]:
        params = "  ".join(f"{k.split('.', 1)[1]}={_fmt(v)}" for k, v in sorted(r["params"].items()))
        stopped = " stopped" if r["status"] == "stopped early" else ""
        t.add_row(str(r["number"]), f"{r['mean_pearson']:.4f}", f"{r['best_epoch'] + 1}/{r['epochs']}{stopped}",
                  params)
    out.print(t)
    out.print(f"{c['total']} trials: {c['complete']} ran all epochs, {c['stopped early']} stopped early by ASHA, "
              f"{c['failed']} failed"
              + (f", {c['unfinished'] + c['no result']} unfinished" if c["unfinished"] + c["no result"] else "")
              + f"  ({res.elapsed_s / 60:.1f} min)", highlight=False)
    for r in [r for r in res.trials if r["status"] == "failed"][:5]:
        err.print(f"  failed trial {r['number']}: {r['error']} (traceback: "
                  f"{res.ray_storage or f'{res.run_dir}/ray'}/search/trial_{r['trial_id']}/error.txt)",
                  highlight=False, soft_wrap=True)
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
    if res.interrupted:
        out.print(f"the search was interrupted; continue it: emi-ray tune --resume --out {res.run_dir}",
                  highlight=False)
        return
    out.print(f"next: emi-ray train --best --space {res.space}     (or --from {res.run_dir})\n"
              f"      emi-ray predict RUN --out preds.csv          (RUN: the directory train prints)",
              highlight=False)
