"""The searcher of a search, without Ray: told what the core reports epoch by epoch, the study records the
best epoch's r (not the last epoch's), ASHA's stops as PRUNED, the runs rank by the same number."""

from __future__ import annotations

import textwrap

import optuna
import pytest


def results(per_epoch: list[float]) -> list[dict]:
    """What the training core reports for these per-epoch validation r: this epoch's and the best so far."""
    out, best = [], float("-inf")
    for i, r in enumerate(per_epoch):
        best = max(best, r)
        out.append({"training_iteration": i + 1, "epoch": i, "mean_pearson": r, "best_mean_pearson": best})
    return out


@pytest.fixture
def searcher(tmp_path):
    from emi_ray.tune.settings import SearchSettings
    from emi_ray.tune.spaces import load_space
    from emi_ray.tune.study import make_searcher

    p = tmp_path / "obj.yaml"
    p.write_text(textwrap.dedent("""\
        trials: 4
        max_epochs: 4
        concurrency: 2
        scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}
        params:
          model.dropout: {uniform: [0.0, 0.3]}
        """))
    space = load_space(p)
    settings = SearchSettings(space="obj", space_source=str(p), features="f", trials=4, concurrency=2,
                              max_epochs=4, cpus_per_trial=1, gpus_per_trial=0, seed=0, top_k=3,
                              metric=space.metric, mode=space.mode, scheduler=space.scheduler, full_epochs=20,
                              full_patience=6, base={})
    return make_searcher(space, settings, tmp_path), settings, tmp_path


def run_trial(s, tid: str, per_epoch: list[float]) -> None:
    """As Tune drives a searcher: every result but the one that stops the trial (ASHA's stop, or max_t,
    which the scheduler answers with STOP) reaches on_trial_result; on_trial_complete gets the last."""
    s.suggest(tid)
    rs = results(per_epoch)
    for r in rs[:-1]:
        s.on_trial_result(tid, r)
    s.on_trial_complete(tid, result=rs[-1])


def test_study_is_told_the_best_epoch_and_asha_stops_are_pruned(searcher):
    from emi_ray.tune.study import load_study

    s, settings, run_dir = searcher
    assert settings.objective == "best_mean_pearson" and s.metric == "best_mean_pearson"
    run_trial(s, "full_dip", [0.30, 0.50, 0.40, 0.35])  # best epoch 2 of 4: the last epoch is worse
    run_trial(s, "full_up", [0.10, 0.20, 0.30, 0.45])
    run_trial(s, "stopped", [0.60, 0.55])  # ASHA stopped it after 2 epochs: the best r of all, not complete
    study = load_study(run_dir, settings)
    by_id = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    dip, up, stopped = by_id["full_dip"], by_id["full_up"], by_id["stopped"]
    assert dip.state == optuna.trial.TrialState.COMPLETE and dip.value == pytest.approx(0.50)  # not 0.35
    assert dip.intermediate_values == pytest.approx({1: 0.30, 2: 0.50, 3: 0.50, 4: 0.50})  # all 4, best so far
    assert up.state == optuna.trial.TrialState.COMPLETE and up.value == pytest.approx(0.45)
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.user_attrs["stopped_at_epoch"] == 2
    assert stopped.intermediate_values == pytest.approx({1: 0.60, 2: 0.60}) and stopped.value == pytest.approx(0.60)
    # the study's best (optuna-dashboard's) is the best trial that ran all epochs, as ranked() orders the rows
    assert study.best_trial.number == dip.number


def test_rows_rank_complete_trials_first_as_the_study_does():
    from emi_ray.tune.results import ranked

    rows = [{"number": 0, "status": "complete", "mean_pearson": 0.40},
            {"number": 1, "status": "stopped early", "mean_pearson": 0.60},
            {"number": 2, "status": "complete", "mean_pearson": 0.50},
            {"number": 3, "status": "failed", "mean_pearson": None},
            {"number": 4, "status": "stopped early", "mean_pearson": 0.10}]
    assert [r["number"] for r in ranked(rows)] == [2, 0, 1, 4]
    assert [r["number"] for r in ranked(rows, "min")] == [0, 2, 4, 1]


def test_the_search_experiment_ranks_and_stops_by_the_objective(searcher, tmp_path):
    from emi_ray.tune.experiment import _scheduler, search_run

    _, settings, run_dir = searcher
    run = search_run(run_dir, settings, "search")
    assert run.metric == "best_mean_pearson"  # TuneConfig's metric: Tune's ranking and ASHA's (it has none)
    assert run.tune_config(scheduler=_scheduler(settings)).metric == "best_mean_pearson"
