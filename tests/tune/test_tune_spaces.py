"""Search-space YAML parsing (every distribution kind), bad files, named spaces; no Ray."""

from __future__ import annotations

import json
import textwrap
import warnings

import pytest

from emi_ray.config import Config, load_config
from emi_ray.errors import ConfigError, EmiError
from emi_ray.tune.distributions import contains, decode_value, encode_choice
from emi_ray.tune.spaces import check_runnable, list_spaces, load_space, space_to_yaml


def write(tmp_path, text: str, name: str = "space.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_every_distribution_kind(tmp_path):
    p = write(tmp_path, """
        trials: 5
        max_epochs: 4
        concurrency: 1
        scheduler: {kind: asha, grace_period: 2, reduction_factor: 3}
        fixed: {model.dim: 32}
        params:
          model.fusion: {choice: [quality, mean]}
          model.modalities: {choice: [[video, audio], [audio]]}
          model.audio_gate: {choice: [true, false]}
          model.tcn_layers: {int: [0, 4]}
          model.segments: {int: [1, 9], step: 2}
          model.audio_hidden: {int: [8, 64], log: true}
          model.dropout: {uniform: [0.0, 0.3], step: 0.05}
          train.weight_decay: {uniform: [0.0, 0.1]}
          train.lr_max: {loguniform: [1.0e-4, 1.0e-2]}
    """)
    s = load_space(p)
    assert (s.trials, s.max_epochs, s.concurrency) == (5, 4, 1)
    assert s.scheduler == {"kind": "asha", "grace_period": 2, "reduction_factor": 3}
    assert s.fixed == {"model.dim": 32}
    d = s.optuna_space()
    assert d["model.fusion"].choices == ("quality", "mean")
    assert d["model.modalities"].choices == ("video+audio", "audio")  # lists as scalars for Optuna
    assert d["model.audio_gate"].choices == (True, False)
    assert (d["model.tcn_layers"].low, d["model.tcn_layers"].high, d["model.tcn_layers"].step) == (0, 4, 1)
    assert (d["model.segments"].low, d["model.segments"].high, d["model.segments"].step) == (1, 9, 2)
    assert d["model.audio_hidden"].log and d["model.audio_hidden"].step == 1
    assert d["model.dropout"].step == pytest.approx(0.05) and not d["model.dropout"].log
    assert d["train.weight_decay"].step is None
    assert d["train.lr_max"].log and d["train.lr_max"].low == pytest.approx(1e-4)
    # a self-contained copy parses to the same space
    copy = write(tmp_path, space_to_yaml(s), "copy.yaml")
    assert load_space(copy).optuna_space() == d


def test_encoded_choice_decodes_in_trial_config():
    from emi_ray.tune.trial import TrialSpec, param_space, split_config

    spec = TrialSpec(base=Config().to_dict(), features="x")
    sampled = {"model.modalities": encode_choice(["video", "text"]), "model.dim": 64}
    cfg = spec.config(sampled)
    assert cfg.model.modalities == ["video", "text"] and cfg.model.dim == 64
    assert split_config(param_space(spec, sampled)) == (spec, sampled)
    # the trial configs of searches started before TrialSpec (in their Tune snapshots) still read
    legacy = {"base": Config().to_dict(), "features": "x", "overrides": {"train.seed": 2}, **sampled}
    old, got = split_config(legacy)
    assert got == sampled and old.features == "x" and old.config(got).train.seed == 2


@pytest.mark.parametrize("params, words", [
    ("model.nope: {choice: [1, 2]}", ["model.nope", "unknown config key"]),
    ("nosection: {choice: [1, 2]}", ["nosection", "unknown config key"]),
    ("model.dim: {normal: [0, 1]}", ["model.dim", "unknown distribution kind 'normal'"]),
    ("model.dim: {int: [64, 16]}", ["model.dim", "bad bounds", "low < high"]),
    ("train.lr_max: {loguniform: [0.0, 0.1]}", ["train.lr_max", "log scale needs low > 0"]),
    ("train.lr_max: {uniform: [0.1]}", ["train.lr_max", "[low, high]"]),
    ("train.lr_max: {int: [1, 3]}", ["train.lr_max", "float setting"]),
    ("model.dim: {uniform: [16.0, 64.0]}", ["model.dim", "int setting"]),
    ("model.dim: {int: [16, 64], step: 5}", ["model.dim", "not a multiple of step 5"]),
    ("train.lr_max: {loguniform: [1.0e-4, 1.0e-2], step: 0.001}", ["train.lr_max", "'step' is not valid"]),
    ("model.fusion: {choice: []}", ["model.fusion", "non-empty list"]),
    ("model.fusion: {choice: [quality, quality]}", ["model.fusion", "duplicate"]),
    ("model.dim: {choice: [16, big]}", ["model.dim", "choice 'big'", "expected int"]),
    ("model.dim: 64", ["model.dim", "expected a distribution"]),
    ("model.dim: {int: [16, 64], uniform: [1.0, 2.0]}", ["model.dim", "exactly one distribution kind"]),
])
def test_bad_param_names_file_and_key(tmp_path, params, words):
    p = write(tmp_path, f"params:\n  {params}\n", "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    msg = str(e.value)
    assert str(p) in msg
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("settings, words", [
    ("trials: 0", ["trials", "positive int"]),
    ("mode: maximise", ["mode", "max or min"]),
    ("scheduler: {kind: hyperband}", ["scheduler.kind", "unknown scheduler 'hyperband'"]),
    ("scheduler: {kind: asha, grace_period: 20}", ["scheduler.grace_period"]),
    ("scheduler: {kind: asha, reduction_factor: 1}", ["scheduler.reduction_factor"]),
    ("max_epoch: 3", ["unknown setting 'max_epoch'"]),
    ("fixed: {model.dimm: 3}", ["fixed.model.dimm", "unknown config key"]),
])
def test_bad_settings(tmp_path, settings, words):
    p = write(tmp_path, f"{settings}\nparams:\n  model.dim: {{choice: [16, 32]}}\n", "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_not_yaml_and_missing(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(write(tmp_path, "params: {a: [1, 2\n", "broken.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="'nope': no such search space.*fusion"):
        load_space("nope")


def test_named_spaces():
    rows = {r["name"]: r for r in list_spaces()}
    assert {"fusion", "temporal", "stage1", "full"} <= set(rows)
    assert all("error" not in r for r in rows.values())
    fusion, temporal, full = load_space("fusion"), load_space("temporal"), load_space("full")
    assert {"model.fusion", "model.fusion_layers", "model.dim", "model.dropout", "model.modalities",
            "train.lr_max"} <= set(fusion.params)
    assert {"model.tcn_layers", "model.tcn_kernel", "model.segments", "model.audio_gate"} <= set(temporal.params)
    stage1 = load_space("stage1")
    assert set(full.params) == set(fusion.params) | set(temporal.params) | set(stage1.params)
    assert full.fixed["stage1.epochs"] == stage1.fixed["stage1.epochs"]
    assert fusion.metric == "mean_pearson" and fusion.mode == "max" and fusion.scheduler["kind"] == "asha"
    # every choice of the named spaces makes a valid config
    for name in ("fusion", "temporal", "full", "inputs"):
        for key, d in load_space(name).params.items():
            for c in getattr(d, "choices", ()):
                Config.from_dict({key.split(".")[0]: {key.split(".")[1]: decode_value(key, c)}})


def test_stage1_space_needs_media_encoder_features(synth_store):
    s = load_space("stage1")
    assert s.params["stage1.temperature"].low < 0.07 < s.params["stage1.temperature"].high
    assert s.params["stage1.temperature"].log
    assert set(s.stage1_keys()) >= {"stage1.temperature", "stage1.weighted", "stage1.lr_max"}
    for name in ("fusion", "temporal", "inputs"):
        check_runnable(load_space(name), synth_store)  # stage-II-only spaces take any store
    # the organiser store holds imported vit/wav2vec2 pickles: nothing stage I can encode a corpus with
    with pytest.raises(ConfigError, match="stage-I trials need features extracted from media.*--preset lite"):
        check_runnable(s, synth_store)


def test_cli_list_spaces_and_stage1_error(synth_store):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    r = CliRunner().invoke(app, ["tune", "--list-spaces"])
    assert r.exit_code == 0, r.output
    for name in ("fusion", "temporal", "stage1", "full", "model.fusion_layers", "loguniform"):
        assert name in r.output
    r = CliRunner().invoke(app, ["tune", "--space", "stage1", "--features", str(synth_store)])
    assert r.exit_code == 2
    assert "stage-I trials need features extracted from media" in r.output
    assert "Traceback" not in r.output


def test_cli_bad_space_file(tmp_path):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    p = write(tmp_path, "params:\n  model.widht: {int: [1, 4]}\n", "mine.yaml")
    r = CliRunner().invoke(app, ["tune", "--space", str(p)])
    assert r.exit_code == 2
    assert "model.widht" in r.output and "mine.yaml" in r.output


def test_best_config_restores_full_budget(tmp_path, monkeypatch):
    """train --best: best.yaml as searched (short epochs, no patience) -> full budget."""
    from emi_ray.config import dump_config
    from emi_ray.tune.best import best_config
    from emi_ray.tune.settings import pointer_path

    monkeypatch.setenv("EMI_RAY_HOME", str(tmp_path / "home"))
    run = tmp_path / "search-run"
    run.mkdir()
    cfg = Config()
    cfg.model.dim, cfg.train.epochs, cfg.train.patience = 48, 3, 0
    dump_config(cfg, run / "best.yaml")
    (run / "search.json").write_text(json.dumps({"space": "fusion", "full_epochs": 20, "full_patience": 6}))
    got, where = best_config(None, run)
    assert (got.model.dim, got.train.epochs, got.train.patience) == (48, 20, 6)
    assert str(run) in where
    assert load_config(run / "best.yaml").train.epochs == 3
    with pytest.raises(EmiError, match="no search"):
        best_config("fusion", None)
    pointer_path("fusion").parent.mkdir(parents=True)
    pointer_path("fusion").write_text(str(run))
    assert best_config("fusion", None)[0].model.dim == 48
    assert best_config(None, None)[0].model.dim == 48  # the latest search of any space
    (run / "best.yaml").unlink()
    with pytest.raises(EmiError, match="no best.yaml yet"):
        best_config("fusion", None)
    with pytest.raises(EmiError, match="not a search run directory"):
        best_config(None, tmp_path)


def test_start_point_is_the_base_config_where_it_lies_in_the_space():
    fusion = load_space("fusion")
    point = fusion.start_point(Config())
    assert set(point) == set(fusion.params)  # the paper's defaults lie in the fusion space
    assert point["model.modalities"] == "video+audio+text" and point["model.fusion"] == "quality"
    cfg = Config()
    cfg.model.dim = 100  # off the step-64 grid of model.dim
    cfg.train.lr_max = 1.0  # above the log-uniform range
    assert set(fusion.params) - set(fusion.start_point(cfg)) == {"model.dim", "train.lr_max"}
    d = fusion.params["model.dropout"]
    assert contains(d, 0.1) and not contains(d, 0.12) and not contains(d, True) and not contains(d, "x")


CONDITIONAL = """
    params:
      model.arch: {choice: [ustc, text_anchor, lstm_mlp]}
      model.dim: {int: [64, 128], step: 64}
      model.fusion: {choice: [quality, concat], when: {model.arch: ustc}}
      model.fusion_layers: {int: [0, 2], when: {model.fusion: quality}}
      model.lstm_layers: {int: [0, 2], when: {model.arch: [lstm_mlp, ustc]}}
      model.modalities: {choice: [[video, audio, text], [audio]]}
      model.segments: {int: [1, 4], when: {model.modalities: [audio], model.arch: ustc}}
"""


def test_conditions_load_describe_and_round_trip(tmp_path):
    s = load_space(write(tmp_path, CONDITIONAL))
    assert list(s.params) == ["model.arch", "model.dim", "model.fusion", "model.fusion_layers", "model.lstm_layers",
                              "model.modalities", "model.segments"]  # file order is sampling order
    assert s.conditions == {"model.fusion": {"model.arch": ("ustc",)},
                            "model.fusion_layers": {"model.fusion": ("quality",)},
                            "model.lstm_layers": {"model.arch": ("lstm_mlp", "ustc")},
                            "model.segments": {"model.modalities": ("audio",), "model.arch": ("ustc",)}}
    d = s.described()
    assert d["model.fusion"] == "choice quality, concat  (when model.arch = ustc)"
    assert d["model.lstm_layers"] == "int [0, 2]  (when model.arch in lstm_mlp, ustc)"
    assert d["model.segments"].endswith("(when model.modalities = audio and model.arch = ustc)")
    assert d["model.dim"] == "int [64, 128] step 64"
    assert "model.fusion (when model.arch = ustc)" in s.keys_line()
    copy = load_space(write(tmp_path, space_to_yaml(s), "copy.yaml"))  # a search's space.yaml reads back
    assert copy.conditions == s.conditions and copy.optuna_space() == s.optuna_space()
    flat = load_space("fusion")
    assert not flat.conditions and isinstance(flat.searcher_space(), dict)  # flat: Optuna distributions, as before
    assert callable(s.searcher_space())


@pytest.mark.parametrize("when, words", [
    ("{model.archh: ustc}", ["model.fusion: when: 'model.archh' is not a parameter of this space"]),
    ("{model.arch: ustcc}", ["model.fusion: when: model.arch = 'ustcc' is not a value model.arch takes",
                             "choice ustc, text_anchor, lstm_mlp"]),
    ("{model.arch: [ustc, nope]}", ["model.arch = 'nope'"]),
    ("{model.dim: 100}", ["model.dim = 100 is not a value", "int [64, 128] step 64"]),
    ("{model.lstm_layers: 1}", ["model.fusion: when: model.lstm_layers is listed after model.fusion",
                                "move model.lstm_layers up"]),  # a forward reference
    ("{model.fusion: quality}", ["model.fusion is listed after model.fusion (or is model.fusion itself)"]),
    ("ustc", ["model.fusion: when: expected a mapping", "{model.arch: ustc}"]),
    ("{}", ["model.fusion: when: expected a mapping"]),
    ("{model.arch: []}", ["model.fusion: when: model.arch: expected a value or a non-empty list"]),
])
def test_bad_conditions_name_file_and_key(tmp_path, when, words):
    p = write(tmp_path, f"""
        params:
          model.arch: {{choice: [ustc, text_anchor, lstm_mlp]}}
          model.dim: {{int: [64, 128], step: 64}}
          model.fusion: {{choice: [quality, concat], when: {when}}}
          model.lstm_layers: {{int: [0, 2]}}
    """, "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_space(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_a_cycle_is_a_forward_reference(tmp_path):
    p = write(tmp_path, """
        params:
          model.fusion: {choice: [quality, concat], when: {model.arch: ustc}}
          model.arch: {choice: [ustc, lstm_mlp], when: {model.fusion: quality}}
    """, "cycle.yaml")
    with pytest.raises(ConfigError, match=r"cycle.yaml: model.fusion: when: model.arch is listed after model.fusion"):
        load_space(p)


def test_start_point_holds_only_the_params_the_base_config_switches_on(tmp_path):
    s = load_space(write(tmp_path, CONDITIONAL))
    base = Config()  # arch ustc, fusion quality, modalities video+audio+text
    point = s.start_point(base)
    assert set(point) == {"model.arch", "model.dim", "model.fusion", "model.fusion_layers", "model.lstm_layers",
                          "model.modalities"}  # segments: only when modalities = audio
    assert s.covers(point)
    base.model.arch = "text_anchor"
    point = s.start_point(base)
    assert set(point) == {"model.arch", "model.dim", "model.modalities"} and s.covers(point)
    base.model.arch = "ustc"
    base.model.fusion = "mean"  # not in the space: its dependants are off, and the point is not a whole trial
    point = s.start_point(base)
    assert "model.fusion" not in point and "model.fusion_layers" not in point and not s.covers(point)


def test_a_flat_space_samples_exactly_as_before_conditions(tmp_path):
    """The searcher of a flat space draws the same trials as before `when` existed: Optuna distributions
    and a multivariate TPE without `group`, started from the base config (two trials at a time: the liar)."""
    import optuna
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    from emi_ray.tune.settings import SearchSettings
    from emi_ray.tune.study import make_searcher

    space = load_space("fusion")
    settings = SearchSettings(space="fusion", space_source="x", features="f", trials=24, concurrency=2,
                              max_epochs=2, cpus_per_trial=1, gpus_per_trial=0, seed=3, top_k=3, metric="mean_pearson",
                              mode="max", scheduler={"kind": "none"}, full_epochs=20, full_patience=6,
                              base=Config().to_dict())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
        old_sampler = TPESampler(seed=3, n_startup_trials=4, multivariate=True, constant_liar=True)
    old = OptunaSearch(space=space.optuna_space(), metric=settings.objective, mode="max", sampler=old_sampler,
                       points_to_evaluate=[space.start_point(Config())])
    new = make_searcher(space, settings, tmp_path)
    seqs = []
    for s in (old, new):
        seq = []
        for i in range(24):
            seq.append(s.suggest(f"t{i}"))
            if i % 2:  # two at a time: the earlier one ends first
                for j in (i - 1, i):
                    p = seq[j]
                    r = -abs(p["model.dropout"] - 0.1) - abs(p["model.dim"] - 128) / 1000
                    s.on_trial_complete(f"t{j}", result={"training_iteration": 2, "best_mean_pearson": r})
        seqs.append(seq)
    assert seqs[0][0] == space.start_point(Config())
    assert seqs[0] == seqs[1]


def test_importance_of_partial_trials_weighs_the_shared_params(tmp_path):
    """fANOVA over trials that each sampled their own knobs: no crash, the one shared parameter gets it all,
    and the plot is written."""
    from emi_ray.plots import param_importance
    from emi_ray.tune.results import importances

    s = load_space(write(tmp_path, """
        params:
          model.arch: {choice: [ustc, lstm_mlp]}
          model.fusion: {choice: [quality, concat], when: {model.arch: ustc}}
          model.lstm_layers: {int: [0, 2], when: {model.arch: lstm_mlp}}
    """))
    rows = []
    for i in range(12):
        own = {"model.fusion": "quality"} if i % 2 else {"model.lstm_layers": i % 3}
        rows.append({"number": i, "status": "complete", "mean_pearson": 0.1 * (i % 2) + 0.001 * i,
                     "params": {"model.arch": "ustc" if i % 2 else "lstm_mlp", **own}})
    rows.append({"number": 12, "status": "complete", "mean_pearson": 0.5, "params": {}})  # not of this space
    imp = importances(rows, s)
    assert set(imp) == {"model.arch"} and imp["model.arch"] == pytest.approx(1.0)
    param_importance(imp, tmp_path / "importance.png")
    assert (tmp_path / "importance.png").read_bytes()[:4] == b"\x89PNG"


def test_history_best_so_far_is_over_trials_that_ran_all_epochs(tmp_path):
    """An ASHA-stopped trial's higher r (fewer epochs) is never the best so far: Optuna crowns COMPLETE only."""
    from emi_ray.plots import best_so_far, optimisation_history

    rows = [{"number": 0, "status": "complete", "mean_pearson": 0.2},
            {"number": 1, "status": "stopped early", "mean_pearson": 0.9},
            {"number": 2, "status": "failed", "mean_pearson": None},
            {"number": 3, "status": "complete", "mean_pearson": 0.3},
            {"number": 4, "status": "complete", "mean_pearson": 0.25}]
    assert best_so_far(rows) == [(0, 0.2), (3, 0.3), (4, 0.3)]
    optimisation_history(rows, tmp_path / "history.png")
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"
