"""The search console without Ray: the board of trials (running, ended, best, ETA), its live table on a
terminal and its plain lines elsewhere; TPE's constant liar."""

from __future__ import annotations

import io
import re

from rich.console import Console

from emi_ray.tune.trial import TrialSpec, param_space


def events(progress, n_epochs: int = 3) -> None:
    """Two trials: a runs all epochs (best at epoch 2), b is stopped after 1; then c starts."""
    cfg = {"a": param_space(TrialSpec(base={}, features="x"), {"model.dim": 64}),
           "b": param_space(TrialSpec(base={}, features="x"), {"model.dim": 128}),
           "c": param_space(TrialSpec(base={}, features="x"), {"model.dim": 192})}
    progress("start", {"trial_id": "a", "config": cfg["a"]})
    progress("start", {"trial_id": "b", "config": cfg["b"]})
    best = -1.0
    for e, r in enumerate([0.2, 0.4, 0.3][:n_epochs], 1):
        best = max(best, r)
        progress("result", {"trial_id": "a", "result": {"training_iteration": e, "mean_pearson": r,
                                                        "best_mean_pearson": best}})
        if e == 1:
            res = {"training_iteration": 1, "mean_pearson": 0.5, "best_mean_pearson": 0.5}
            progress("result", {"trial_id": "b", "result": res})
            progress("complete", {"trial_id": "b", "result": res, "stopped_early": True})
            progress("start", {"trial_id": "c", "config": cfg["c"]})
    if n_epochs == 3:
        progress("complete", {"trial_id": "a", "result": {"training_iteration": 3, "mean_pearson": 0.3,
                                                          "best_mean_pearson": 0.4}, "stopped_early": False})


def test_board_tracks_running_ended_best_and_eta():
    from emi_ray.tune.events import Progress

    said, seen = [], []
    p = Progress(said.append, total=4, what="trial", mode="max", on_event=lambda k, d: seen.append((k, d)),
                 max_epochs=3)
    events(p)
    board = seen[-1][1]["board"]
    assert board.done == 2 and [t.trial_id for t in board.running] == ["c"]
    a = board.trials["a"]
    assert (a.status, a.epochs, a.r, a.best) == ("complete", 3, 0.3, 0.4)
    assert board.trials["b"].status == "stopped early"
    # the best so far is the best trial that ran all epochs (what Optuna crowns), not b's 0.5 after 1 epoch
    assert board.best is a
    assert [t.trial_id for t in board.ended] == ["a", "b"]
    eta = board.eta_s()
    assert eta is not None and eta > 0 and "left" in board.eta()
    assert len(said) == 2 and said[0].startswith("trial 1/4 b: r = 0.5000 (stopped early after 1 epochs)")
    assert "best so far 0.4000" in said[1] and "left" in said[1] and "dim=64" in said[1]
    assert board.line("start", {"trial_id": "c"}).startswith("trial c started (1 running) | dim=192")
    line = board.line("result", {"trial_id": "a"})
    assert line.startswith("trial a epoch 3/3: r = 0.3000, best 0.4000; 2/4 ended")


def test_trial_console_plain_lines_off_a_terminal():
    from emi_ray.cli_tune import TrialConsole
    from emi_ray.tune.events import Progress

    buf = io.StringIO()
    con = TrialConsole(Console(file=buf, force_terminal=False, width=200, markup=False))
    p = Progress(lambda _m: None, total=4, what="trial", mode="max", on_event=con.event, max_epochs=3)
    events(p)
    con.close()
    lines = buf.getvalue().splitlines()
    assert sum("started" in ln for ln in lines) == 3
    assert sum(re.search(r"epoch \d/3", ln) is not None for ln in lines) == 4  # a: 3 epochs, b: 1
    assert "\x1b[" not in buf.getvalue()


def test_trial_console_live_table_on_a_terminal():
    from emi_ray.cli_tune import TrialConsole
    from emi_ray.tune.events import Progress

    buf = io.StringIO()
    con = TrialConsole(Console(file=buf, force_terminal=True, width=160, markup=False))
    p = Progress(lambda _m: None, total=4, what="trial", mode="max", on_event=con.event, max_epochs=3)
    events(p, n_epochs=2)  # a still runs: rows for a (running), c (running), b (stopped early)
    table = Console(file=io.StringIO(), width=160, record=True)
    table.print(con.table(p.board))
    text = table.export_text()
    assert "1/4 ended, 2 running; best so far 0.5000 (b)" in text  # no trial has run all epochs yet
    for want in ("running", "stopped early", "dim=192", "0.4000", "2/3"):
        assert want in text, text
    assert con.live is not None
    con.close()
    assert con.live is None and buf.getvalue()


def test_tpe_uses_constant_liar_when_trials_run_at_once():
    from emi_ray.tune.settings import SearchSettings
    from emi_ray.tune.study import _sampler

    def settings(concurrency: int) -> SearchSettings:
        return SearchSettings(space="s", space_source="s.yaml", features="f", trials=20, concurrency=concurrency,
                              max_epochs=4, cpus_per_trial=1, gpus_per_trial=0, seed=0, top_k=3,
                              metric="mean_pearson", mode="max", scheduler={"kind": "none"}, full_epochs=20,
                              full_patience=6, base={})

    assert _sampler(settings(2))._constant_liar is True
    assert _sampler(settings(1))._constant_liar is False
    assert settings(2).objective == "best_mean_pearson"


def test_eta_before_any_trial_ends_assumes_the_asha_schedule_not_max_epochs():
    """ASHA (grace 1, reduction 2, 8 epochs) stops half the trials at each rung: a trial runs
    1 + 1/2 + 2/4 + 4/8 = 2.5 epochs on average, so the first ETA is not that of 8 epochs per trial."""
    import time

    from emi_ray.tune.events import Board, asha_expected_epochs

    assert asha_expected_epochs(8, 1, 2) == 2.5
    assert asha_expected_epochs(8, 8, 2) == 8.0 and asha_expected_epochs(6, 2, 3) == 2 + (6 - 2) / 3

    def board(expected):
        b = Board("trial", total=20, max_epochs=8, expected_epochs=expected)
        for tid in ("a", "b"):
            b.update("start", {"trial_id": tid, "config": {}})
        for e in (1, 2):
            for tid in ("a", "b"):
                b.update("result", {"trial_id": tid, "result": {"training_iteration": e, "mean_pearson": 0.1}})
        b.first_epoch_at = time.monotonic() - 3.0  # 4 trial-epochs in 3 s: 1 s per trial-epoch
        return b

    plain, asha = board(None).eta_s(), board(asha_expected_epochs(8, 1, 2)).eta_s()
    # 18 trials to start: 8 epochs each = 144 trial-epochs without the schedule, 2.5 each = 45 with it
    assert plain > 140 and 40 < asha < 60, (plain, asha)
