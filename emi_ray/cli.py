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

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from emi_ray import VERBOSE_ENV, __version__
from emi_ray.cli_choices import (Group)

app = typer.Typer(
    help="emi-ray: Emotional Mimicry Intensity estimation on Ray (extract, train, tune, predict).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion SHELL
    cls=Group,  # a usage error is one line, exit 2
    pretty_exceptions_enable=False,
)
# markup=False: paths, file names and messages print as they are (a `[/]` in a name is not rich markup);
# styled output is built as rich Text.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
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
    """Turn EmiError into one line on stderr and exit code 2 (printed as plain text: a path may hold
    rich markup such as `[/]`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emi_ray.errors import EmiError

        try:
            return fn(*args, **kwargs)
        except EmiError as e:
            if _state["debug"]:
                raise
            err.print(Text.assemble(("error:", "red"), " " + " ".join(str(e).splitlines())), highlight=False,
                      soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def notify(msg: str) -> None:
    err.print(Text(msg, style="yellow"), highlight=False)


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
    force: bool = typer.Option(False, "--force", help="Write into OUT even if it is not empty (files with the "
                                                      "dataset's names are replaced)."),
) -> None:
    """Write a synthetic dataset in the exact Hume-Vidmimic2 layout."""
    import time

    from emi_ray.data.synth_dataset import check_target

    check_target(out_dir, force)  # never over an existing dataset (or anything else) by accident
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
        err.print(Text.assemble(("warning:", "yellow"), f" {w}"), highlight=False)
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
    ref_mean = [Text(f"{sum(reference.values()) / len(reference):.4f}", "bold")] if reference else []
    t.add_row(Text("mean", "bold"), Text(f"{result['mean_pearson']:.4f}", "bold"), *ref_mean)
    out.print(t)




# Commands of the other stages register themselves on `app` (their heavy imports stay lazy).
from emi_ray import cli_extract  # noqa: E402,F401
from emi_ray import cli_info  # noqa: E402,F401
from emi_ray import cli_train  # noqa: E402,F401
from emi_ray import cli_ops  # noqa: E402,F401
from emi_ray import cli_tune  # noqa: E402,F401
from emi_ray import cli_align  # noqa: E402,F401
from emi_ray import cli_baseline  # noqa: E402,F401
from emi_ray import cli_corpus  # noqa: E402,F401


def main() -> None:
    app()


if __name__ == "__main__":  # run the registered app, not this module's second copy
    from emi_ray.cli import main as _main

    _main()
