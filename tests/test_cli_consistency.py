"""The CLI is even: every option has help, store readers take --features, reporters take --json,
choices are Enums (a bad one is one line, exit 2), --version, completion, --dry-run creates nothing.

The walkers below read the Typer app's commands; `test_the_checks_can_fail` runs them on a
deliberately uneven app."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import emi_ray
from emi_ray.cli import app

runner = CliRunner()

# commands that read a feature store (they must take --features)
STORE_COMMANDS = {"info", "align-apply", "train", "predict", "evaluate", "ablate", "baseline", "tune"}
# every command reports something as --json, except the one that only serves a web page until Ctrl-C
NOT_REPORTING = {"dashboard"}
# option -> its choices, where the CLI offers a fixed set (an Enum: --help lists them)
CHOICES = {
    ("extract", "--preset"): {"organiser", "lite", "paper", "leaders"},
    ("extract", "--video-encoder"): {"clip", "lite", "none"},
    ("extract", "--audio-encoder"): {"wav2vec2", "wavlm", "hubert", "lite", "none"},
    ("extract", "--text-encoder"): {"bert", "text-lm", "hash", "none"},
    ("extract", "--transcriber"): {"whisper", "none"},
    ("predict", "--split"): {"train", "valid", "test"},
    ("evaluate", "--split"): {"train", "valid", "test"},
    ("ablate", "--table"): {"modules", "modalities", "both", "architectures"},
    ("synth-affect", "--modality"): {"vision", "audio", "both"},
    ("pretrain", "--modality"): {"vision", "audio", "both"},
    ("corpus affectnet", "--split"): {"auto", "train", "valid"},
    ("pretrain", "--video-encoder"): {"lite", "clip"},
    ("pretrain", "--audio-encoder"): {"lite", "wav2vec2"},
    ("pretrain", "--text-encoder"): {"hash", "bert"},
}


def commands(a: typer.Typer = app) -> dict:
    """name -> command; a command group's subcommands as 'group sub' (e.g. 'corpus affectnet')."""
    found = {}
    for name, cmd in typer.main.get_command(a).commands.items():
        subs = getattr(cmd, "commands", None)
        found.update({f"{name} {s}": c for s, c in subs.items()} if subs else {name: cmd})
    return found


def option_names(cmd) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", [])}


def params_without_help(a: typer.Typer) -> list[str]:
    """'command PARAM' for every option or argument without help text (the root's options too)."""
    group = typer.main.get_command(a)
    found = [f"emi-ray {p.name}" for p in group.params if not getattr(p, "help", None)]
    for name, cmd in commands(a).items():
        found += [f"{name} {p.opts[0] if p.opts else p.name}" for p in cmd.params if not getattr(p, "help", None)]
    return found


def missing_option(a: typer.Typer, names: set[str], option: str) -> list[str]:
    return sorted(n for n, c in commands(a).items() if n in names and option not in option_names(c))


def choices_of(cmd, option: str) -> set[str] | None:
    """The option's fixed choices (where Typer keeps them: click's Choice type, or recent Typer's descriptor)."""
    p = next(p for p in cmd.params if option in getattr(p, "opts", []))
    holder = getattr(p, "type", None) or getattr(p, "type_descriptor", None)
    return {str(getattr(c, "value", c)) for c in getattr(holder, "choices", None) or []} or None


def test_every_option_and_argument_has_help():
    assert params_without_help(app) == []


def test_store_commands_take_features():
    cmds = commands()
    assert STORE_COMMANDS <= set(cmds), STORE_COMMANDS - set(cmds)
    assert missing_option(app, STORE_COMMANDS, "--features") == []
    # a command with a FEATURES argument takes --features too (the argument stays as its alias)
    positional = {n for n, c in cmds.items()
                  if any(p.param_type_name == "argument" and "FEATURES" in (p.metavar or "") for p in c.params)}
    assert positional == {"info", "align-apply"}
    assert missing_option(app, positional, "--features") == []


def test_reporting_commands_take_json():
    reporting = set(commands()) - NOT_REPORTING
    assert missing_option(app, reporting, "--json") == []


def test_choices_are_enums_listed_in_help():
    cmds = commands()
    for (name, option), want in CHOICES.items():
        assert choices_of(cmds[name], option) == want, (name, option)
    r = runner.invoke(app, ["extract", "--help"])
    assert "organiser|lite|paper" in r.output


def test_train_ablate_take_config_and_gpus():
    cmds = commands()
    for name, opts in {"train": {"--config", "--set", "--gpus-per-worker", "--dry-run"},
                       "ablate": {"--config", "--set", "--gpus-per-trial", "--cpus-per-trial"},
                       "tune": {"--config", "--set", "--gpus-per-trial", "--dry-run"},
                       "pretrain": {"--config", "--set", "--dry-run"}}.items():
        assert opts <= option_names(cmds[name]), (name, opts - option_names(cmds[name]))


def test_the_checks_can_fail():
    bad = typer.Typer()

    @bad.command()
    def info(features: str = typer.Argument(None, metavar="FEATURES"), n: int = typer.Option(1, "--n")):
        """No --features, no --json, no help."""

    @bad.command()
    def other(x: int = typer.Option(1, "--x", help="has help")):
        """Fine."""

    assert params_without_help(bad) == ["info features", "info --n"]
    assert missing_option(bad, {"info"}, "--features") == ["info"]
    assert missing_option(bad, {"info", "other"}, "--json") == ["info", "other"]


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.stdout.strip() == f"emi-ray {emi_ray.__version__}" == f"emi-ray {metadata.version('emi-ray')}"


def test_completion_is_offered():
    r = runner.invoke(app, ["--help"])
    assert "--install-completion" in r.output and "--show-completion" in r.output
    script = subprocess.run([sys.executable, "-m", "emi_ray", "--show-completion", "bash"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "SHELL": "/bin/bash", "HOME": "/tmp"})
    assert script.returncode == 0 and "complete" in script.stdout, script.stderr


@pytest.mark.parametrize("args, needles", [
    (["extract", "DATA", "--out", "F", "--preset", "fast"], ["--preset", "'fast'", "organiser"]),
    (["predict", "--split", "tset"], ["--split", "'tset'", "valid"]),
    (["ablate", "--table", "rows"], ["--table", "modules"]),
    (["pretrain", "--modality", "smell"], ["--modality", "vision"]),
    (["tune", "--space", "nosuch"], ["--space", "'nosuch'", "fusion"]),
    (["score", "--bogus"], ["--bogus"]),
])
def test_a_bad_choice_is_one_line_exit_2(args, needles):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("command", [
    ["train", "--set", "train.epochs=3", "--seeds", "2"],
    ["train", "--folds", "3", "--workers", "0"],
    ["tune", "--space", "fusion", "--trials", "3"],
    ["pretrain", "--modality", "vision"],
])
def test_dry_run_creates_nothing(command, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EMI_RAY_HOME", str(home))  # no --features: the default store would be built here
    run = tmp_path / "run"
    r = runner.invoke(app, [*command, "--out", str(run), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert not run.exists() and not home.exists() and list(tmp_path.iterdir()) == []
    assert "# resolved config" in r.stdout and "run_dir:" in r.stdout and str(run) in r.stdout
    r = runner.invoke(app, [*command, "--out", str(run), "--dry-run", "--json"])
    plan = json.loads(r.stdout)
    assert plan["dry_run"] is True and plan["run_dir"] == str(run) and "config" in plan
    if command[0] == "tune":
        assert plan["space"] == "fusion" and plan["trials"] == 3 and plan["config"]["train"]["epochs"] == 8
    if command[0] == "train":
        assert plan["features"].endswith("features-realism") and plan["features_exists"] is False
    assert not home.exists() and list(tmp_path.iterdir()) == []


def test_json_outputs_parse(tmp_path):
    r = runner.invoke(app, ["synth", str(tmp_path / "d"), "--videos", "12", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["clips"] == 12 and sum(s["splits"].values()) == 12
    r = runner.invoke(app, ["extract", str(tmp_path / "d"), "--out", str(tmp_path / "f"), "--json"])
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert (e["done"], e["skipped"], e["failed"]) == (12, 0, 0) and e["store"] == str(tmp_path / "f")
    r = runner.invoke(app, ["info", "--features", str(tmp_path / "f"), "--json"])
    assert json.loads(r.stdout)["splits"] == s["splits"]
    r = runner.invoke(app, ["synth-affect", str(tmp_path / "a"), "-n", "8", "--modality", "vision", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["modalities"] == ["vision"]


def test_info_features_positional_and_option(tmp_path):
    r = runner.invoke(app, ["info", str(tmp_path / "a"), "--features", str(tmp_path / "b")])
    assert r.exit_code == 2 and "give the store once" in r.output


def test_align_apply_takes_features_or_the_positional(tmp_path):
    r = runner.invoke(app, ["align-apply", "--features", "F", "RUN"])
    assert r.exit_code == 2 and "RUN OUT (with --features)" in r.output, r.output
    r = runner.invoke(app, ["align-apply", "RUN", "OUT"])
    assert r.exit_code == 2 and "FEATURES RUN OUT" in r.output, r.output
    # both forms reach the library (which names the missing store)
    for args in (["F", "RUN", "OUT"], ["--features", "F", "RUN", "OUT"]):
        r = runner.invoke(app, ["align-apply", *[str(tmp_path / a) if not a.startswith("-") else a for a in args]])
        assert r.exit_code == 2 and "error:" in r.output and str(tmp_path) in r.output, r.output
