"""The `architecture` search space and `ablate --table architectures`: each trial samples only its own
design's knobs (conditional parameters; the searcher driven without Ray, and one tiny Ray search), every
sampled point builds its design, each design ignores the other designs' knobs, and the table reads right."""

import csv
import pickle
import textwrap

import optuna
import pytest
import torch

from emi_ray.config import Config, load_config
from emi_ray.models import create_model
from emi_ray.tune.ablation import markdown, select_rows
from emi_ray.tune.spaces import load_space
from emi_ray.tune.trial import TrialSpec

DIMS = {"video": 12, "audio": 10, "text": 7}
SHARED = {"model.arch", "model.dim", "model.dropout", "train.lr_max", "train.loss"}
OWN = {"ustc": {"model.fusion", "model.fusion_layers"},
       "text_anchor": {"model.anchor_layers", "model.anchor_queries"},
       "lstm_mlp": {"model.lstm_hidden", "model.lstm_layers"}}


def sample(space, seed):
    """One trial's point, drawn as the search draws it (define-by-run) with a random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return space.searcher_space()(study.ask())


def sample_every_knob(space, seed):
    """A value for every parameter, conditional ones included (as flat spaces were sampled)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return study.ask(space.optuna_space()).params


def other_value(dist, value):
    """A point of `dist` other than `value`."""
    points = dist.choices if hasattr(dist, "choices") else (dist.low, dist.high)
    return next(p for p in points if p != value)


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_space_lets_tpe_choose_the_design_and_its_knobs():
    space = load_space("architecture")
    assert space.params["model.arch"].choices == ("ustc", "text_anchor", "lstm_mlp")
    assert set(space.params) == SHARED | set().union(*OWN.values())
    assert space.conditions == {k: {"model.arch": (arch,)} for arch, keys in OWN.items() for k in keys}
    assert (space.trials, space.max_epochs) == (20, 8)  # sized like fusion.yaml
    start = space.start_point(Config())  # the paper's defaults are TPE's first trial: ustc and its knobs
    assert start["model.arch"] == "ustc" and set(start) == SHARED | OWN["ustc"] and space.covers(start)


def searcher_settings(space, trials: int):
    from emi_ray.tune.settings import SearchSettings

    return SearchSettings(space=space.name, space_source=str(space.path), features="f", trials=trials,
                          concurrency=2, max_epochs=2, cpus_per_trial=1, gpus_per_trial=0, seed=0, top_k=3,
                          metric=space.metric, mode=space.mode, scheduler={"kind": "none"}, full_epochs=20,
                          full_patience=6, base=Config().to_dict())


def toy_score(point: dict) -> float:
    """text_anchor wins, more so with more queries: what TPE should find."""
    return 0.5 + 0.02 * point["model.anchor_queries"] if point["model.arch"] == "text_anchor" else 0.1


def drive(searcher, first: int, n: int) -> list[dict]:
    """As Tune drives the searcher with two trials at a time: suggest, then end the earlier one."""
    points, running = [], []
    for i in range(first, first + n):
        points.append(searcher.suggest(f"t{i}"))
        running.append((f"t{i}", points[-1]))
        if len(running) == 2 or i == first + n - 1:
            for tid, p in running:
                searcher.on_trial_complete(tid, result={"training_iteration": 2, "best_mean_pearson": toy_score(p)})
            running = []
    return points


def test_each_trial_samples_only_its_designs_knobs_and_tpe_learns(tmp_path):
    """30 suggestions of the searcher over the study (no Ray): every trial holds exactly the shared keys
    and its design's own; TPE (grouped by the sets of keys trials sample) homes in on the better design;
    the searcher survives Tune's pickled snapshot (the define-by-run space is plain data)."""
    from emi_ray.tune.study import SafeOptunaSearch, load_study, make_searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("architecture")
    settings = searcher_settings(space, 30)
    searcher = make_searcher(space, settings, tmp_path)
    points = drive(searcher, 0, 20)
    searcher.save(str(tmp_path / "searcher.pkl"))  # what Tune's snapshot keeps; --resume restores it
    restored = SafeOptunaSearch.__new__(SafeOptunaSearch)
    restored.restore(str(tmp_path / "searcher.pkl"))
    points += drive(restored, 20, 10)
    for p in points:
        assert set(p) == SHARED | OWN[p["model.arch"]], p
    assert points[0] == space.start_point(Config())  # the base config first
    archs = [p["model.arch"] for p in points]
    assert set(archs) == set(OWN)  # every design is tried
    assert archs[15:].count("text_anchor") >= 10, archs  # random would give ~5 of 15
    study = load_study(tmp_path, settings)
    assert [t.params for t in study.trials] == points  # the study holds the same (partial) trials
    assert pickle.loads(pickle.dumps(space.searcher_space())) == space.searcher_space()


@pytest.mark.parametrize("arch", OWN)
def test_a_design_ignores_the_other_designs_knobs(arch):
    """Two points that differ only in other designs' knobs build the same model, weights and outputs."""
    space = load_space("architecture")
    spec = TrialSpec(base=Config().to_dict(), features="unused")
    a = {**sample_every_knob(space, 0), "model.arch": arch}
    b = dict(a)
    for key in set().union(*OWN.values()) - OWN[arch]:
        b[key] = other_value(space.params[key], a[key])
    models = []
    for point in (a, b):
        torch.manual_seed(0)
        models.append(create_model(spec.config(point).model, DIMS).eval())
    assert shapes(models[0]) == shapes(models[1])
    batch = {"video": torch.randn(2, 5, 12), "video_mask": torch.ones(2, 5, dtype=torch.bool),
             "video_present": torch.ones(2, dtype=torch.bool), "audio": torch.randn(2, 4, 10),
             "audio_mask": torch.ones(2, 4, dtype=torch.bool), "audio_present": torch.ones(2, dtype=torch.bool),
             "text": torch.randn(2, 7), "text_present": torch.ones(2, dtype=torch.bool)}
    with torch.no_grad():
        torch.testing.assert_close(models[0](batch), models[1](batch))


@pytest.mark.parametrize("seed", range(6))
def test_every_sampled_point_is_a_valid_config_that_builds(seed):
    point = sample(load_space("architecture"), seed)
    assert set(point) == SHARED | OWN[point["model.arch"]]
    cfg = TrialSpec(base=Config().to_dict(), features="unused").config(point)
    assert create_model(cfg.model, DIMS) is not None


def test_architectures_table_rows_and_markdown():
    rows = select_rows("architectures")
    assert [r[1] for r in rows] == ["ustc", "lstm_mlp", "text_anchor", "concat_mlp"]
    assert {r[1]: r[3] for r in rows} == {"ustc": 0.68, "lstm_mlp": 0.706, "text_anchor": 0.708, "concat_mlp": 0.674}
    assert [r[1] for r in select_rows("both")][-1] == "V+A+T"  # the paper's tables are unchanged
    assert not any(r[0] == "architectures" for r in select_rows("both"))
    summary = [{"table": t, "name": n, "mean": 0.2, "std": 0.01, "failed": 0, "error": "", "paper": p}
               for t, n, _, p in rows]
    md = markdown(summary, 3)
    assert "**test** set" in md and "not comparable" in md and "| ustc |" in md and "0.708" in md
    assert md.count("±") == 1 + 4  # the header and one per design


@pytest.mark.slow
def test_conditional_search_end_to_end(small_synth_store, tmp_path):
    """A tiny real search (Ray) over a conditional space: trials.csv leaves the other design's knob empty,
    best.yaml holds the best trial's sampled keys over the base config, --confirm-seeds re-trains with the
    trial's own keys, the importance plot copes with partial trials, and the model learned."""
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    sp = tmp_path / "cond.yaml"
    sp.write_text(textwrap.dedent("""\
        trials: 4
        max_epochs: 3
        concurrency: 2
        scheduler: {kind: none}
        fixed: {model.dim: 16, train.batch_size: 16, data.max_len: 16, model.audio_hidden: 16,
                model.tcn_layers: 1, model.fusion_layers: 1, model.lstm_layers: 1}
        params:
          model.arch: {choice: [ustc, lstm_mlp]}
          train.lr_max: {loguniform: [1.0e-3, 3.0e-3]}
          model.fusion: {choice: [quality, concat], when: {model.arch: ustc}}
          model.lstm_hidden: {int: [16, 32], step: 16, when: {model.arch: lstm_mlp}}
        """))
    notes: list[str] = []
    res = run_search(SearchRequest(sp, small_synth_store, seed=1, confirm_seeds=1, top_k=1, out=tmp_path / "run"),
                     notify=notes.append)
    assert res.counts["total"] == 4 and res.counts["complete"] == 4 and not res.interrupted
    own = {"ustc": "model.fusion", "lstm_mlp": "model.lstm_hidden"}
    rows = list(csv.DictReader(res.files["trials_csv"].open()))
    assert {r["model.arch"] for r in rows} == set(own), rows  # both designs tried
    for r in rows:
        for arch, key in own.items():
            assert (r[key] != "") == (r["model.arch"] == arch), r
    for t in res.trials:  # the console's lines show only a trial's own knobs
        other = own["ustc" if t["params"]["model.arch"] == "lstm_mlp" else "lstm_mlp"].split(".")[1]
        lines = [n for n in notes if n.startswith("trial ") and t["trial_id"] in n and "|" in n]
        assert lines and not any(f"{other}=" in n for n in lines), lines
    best = res.best["params"]
    mine, other = own[best["model.arch"]], own["ustc" if best["model.arch"] == "lstm_mlp" else "lstm_mlp"]
    assert set(best) == {"model.arch", "train.lr_max", mine}
    cfg = load_config(res.files["best_yaml"])
    name = other.split(".")[1]
    assert getattr(cfg.model, name) == getattr(Config().model, name)  # the other design's knob: the base value
    assert getattr(cfg.model, mine.split(".")[1]) == best[mine] and cfg.model.arch == best["model.arch"]
    assert res.best["confirm"]["params"] == best and len(res.confirm) == 1
    assert all(c["mean"] is not None for c in res.confirm)
    assert res.files["importance_png"].read_bytes()[:4] == b"\x89PNG"
    assert set(res.importances) <= {"model.arch", "train.lr_max"}  # fANOVA: the parameters every trial has
    assert res.best["mean_pearson"] > 0.05  # tiny models, 3 epochs: they learned something
