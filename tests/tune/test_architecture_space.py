"""The `architecture` search space and `ablate --table architectures`, without Ray: every sampled
point builds its design, each design ignores the other designs' knobs, and the table reads right."""

import optuna
import pytest
import torch

from emi_ray.config import Config
from emi_ray.models import create_model
from emi_ray.tune.ablation import markdown, select_rows
from emi_ray.tune.spaces import load_space
from emi_ray.tune.trial import TrialSpec

DIMS = {"video": 12, "audio": 10, "text": 7}
OWN = {"ustc": {"model.fusion", "model.fusion_layers"},
       "text_anchor": {"model.anchor_layers", "model.anchor_queries"},
       "lstm_mlp": {"model.lstm_hidden", "model.lstm_layers"}}


def sample(space, seed):
    """One point of the space, drawn the way a random sampler would."""
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
    assert set().union(*OWN.values()) <= set(space.params)
    assert (space.trials, space.max_epochs) == (20, 8)  # sized like fusion.yaml
    assert space.start_point(Config())["model.arch"] == "ustc"  # the paper's defaults are TPE's first trial


@pytest.mark.parametrize("arch", OWN)
def test_a_design_ignores_the_other_designs_knobs(arch):
    """Two points that differ only in other designs' knobs build the same model, weights and outputs."""
    space = load_space("architecture")
    spec = TrialSpec(base=Config().to_dict(), features="unused")
    a = {**sample(space, 0), "model.arch": arch}
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
