import pytest

from emi_ray.config import Config, apply_overrides, load_config, valid_keys
from emi_ray.errors import ConfigError


def test_defaults_follow_the_paper():
    cfg = Config()
    assert cfg.model.modalities == ["video", "audio", "text"]
    assert cfg.model.fusion == "quality" and cfg.model.audio_gate and cfg.model.tcn_layers > 0
    assert cfg.train.ema_decay == 0.999 and cfg.stage1.temperature == 0.07


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["model.dim=64", "model.audio_gate=false", "model.modalities=[audio,text]",
                                     "train.lr_max=3e-4", "data.features=none"])
    assert cfg.model.dim == 64 and cfg.model.audio_gate is False
    assert cfg.model.modalities == ["audio", "text"] and cfg.train.lr_max == 3e-4 and cfg.data.features is None


@pytest.mark.parametrize("item, message", [
    ("model.dims=3", "unknown config key 'model.dims'; valid keys: "),
    ("nope=1", "unknown config key"),
    ("model.dim=abc", "model.dim: expected int, got 'abc'"),
    ("model.dim=1.5", "expected int"),
    ("model.fusion=sum", "choose quality, mean or concat"),
    ("model.modalities=[video,smell]", "non-empty subset"),
    ("model.dim", "expected key=value"),
])
def test_bad_overrides(item, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [item])
    assert message in str(e.value)
    if "unknown" in message:
        assert "model.tcn_layers" in str(e.value)  # lists valid keys


def test_yaml_round_trip_and_errors(tmp_path):
    from emi_ray.config import dump_config

    cfg = apply_overrides(Config(), ["model.segments=6"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").to_dict() == cfg.to_dict()
    (tmp_path / "bad.yaml").write_text("model:\n  segmnts: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.segmnts'"):
        load_config(tmp_path / "bad.yaml")
    assert "train.ema_decay" in valid_keys()


@pytest.mark.parametrize("item", ["model.fusion_heads=0", "train.lr_max=nan", "train.lr_max=-1", "train.workers=-2",
                                  "train.modality_dropout=2", "train.grad_clip=inf", "stage1.temperature=0",
                                  "stage1.batch_size=0", "train.restart_epochs=0", "data.valid_fraction=-0.1"])
def test_every_bad_number_is_one_config_error(item):
    from emi_ray.config import Config, apply_overrides
    from emi_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=item.split("=")[0].replace(".", r"\.")):
        apply_overrides(Config(), [item])


def test_bad_number_on_the_cli_is_one_line_exit_2(tmp_path):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    r = CliRunner().invoke(app, ["train", "--dry-run", "--set", "model.fusion_heads=0"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "model.fusion_heads=0: must be >= 1" in r.output


def test_a_yaml_alias_bomb_is_refused_in_configs_and_search_spaces(tmp_path):
    """576 bytes of nested aliases ("billion laughs") is one ConfigError, not unbounded growth."""
    from emi_ray.config import load_config
    from emi_ray.errors import ConfigError
    from emi_ray.tune.spaces import load_space

    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for k in range(1, 9):
        prev, cur = chr(ord("a") + k - 1), chr(ord("a") + k)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(lines) + "\n"
    assert len(bomb) < 700
    (tmp_path / "c.yaml").write_text(bomb)
    (tmp_path / "s.yaml").write_text(bomb + "params: {}\n")
    with pytest.raises(ConfigError, match="through its aliases"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="through its aliases"):
        load_space(tmp_path / "s.yaml")
