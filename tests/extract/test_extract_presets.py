"""Presets, overrides, the --models file, and up-front path checks (no Ray, no models loaded)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from emi_ray.cli import app
from emi_ray.errors import InputError
from emi_ray.extract.presets import check_paths, load_models_file, modality_entries, plan_extract

runner = CliRunner()
PAPER = ("clip", "wav2vec2", "whisper", "bert")


def test_paper_without_paths_is_one_error_naming_every_path():
    plan = plan_extract("paper")
    with pytest.raises(InputError) as e:
        check_paths(plan)
    msg = str(e.value)
    assert "\n" not in msg and "--models FILE" in msg
    named = re.findall(r"(?:missing: |; )([a-z0-9-]+) \(", msg)
    assert named == list(PAPER)


def test_cli_paper_without_paths_exits_2_before_any_work(tmp_path):
    r = runner.invoke(app, ["extract", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "f"),
                            "--preset", "paper"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert all(name in r.output for name in PAPER) and "no path given" in r.output
    assert not (tmp_path / "f").exists()


def test_models_file_partial_paths_relative_to_file(tmp_path):
    (tmp_path / "w2v").mkdir()
    (tmp_path / "clip.bin").write_bytes(b"x")
    (tmp_path / "models.yaml").write_text(
        "clip: clip.bin\nwav2vec2: {path: w2v, layer: 6}\nwhisper: /nonexistent/whisper\n")
    models = load_models_file(tmp_path / "models.yaml")
    assert models["clip"]["path"] == str(tmp_path / "clip.bin")
    assert models["wav2vec2"] == {"path": str(tmp_path / "w2v"), "layer": 6}
    plan = plan_extract("paper", models=models)
    assert plan.audio.options == {"layer": 6}
    with pytest.raises(InputError) as e:
        check_paths(plan)
    msg = str(e.value)
    assert "whisper" in msg and "/nonexistent/whisper not found" in msg and "bert" in msg
    assert "clip (" not in msg and "wav2vec2 (" not in msg
    r = runner.invoke(app, ["extract", str(tmp_path), "--out", str(tmp_path / "f"), "--preset", "paper",
                            "--models", str(tmp_path / "models.yaml")])
    assert r.exit_code == 2 and "whisper" in r.output and "wav2vec2 (" not in r.output


def test_bad_models_file(tmp_path):
    (tmp_path / "m.yaml").write_text("vit-h: /x\n")
    with pytest.raises(InputError, match="unknown encoder 'vit-h'"):
        load_models_file(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text("- clip\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_models_file(tmp_path / "m.yaml")
    with pytest.raises(InputError, match="models file not found"):
        load_models_file(tmp_path / "none.yaml")


def test_overrides_lite_none_and_wrong_modality():
    plan = plan_extract("paper", video="lite", audio="none", transcriber="none", text="hash")
    assert plan.video.name == "lite-video" and plan.audio is None and plan.transcriber is None
    check_paths(plan)  # nothing left that needs a path
    assert modality_entries(plan, with_text=True) == {
        "video": {"encoder": "lite-video", "dim": 256, "rate_hz": 5.0},
        "text": {"encoder": "hash", "dim": 256, "rate_hz": None},
    }
    lite = plan_extract("lite", fps=2.5, batch_size=4, actors=2, encoder_cpus=0.5, decode_cpus=None)
    assert (lite.fps, lite.batch_size, lite.actors, lite.encoder_cpus, lite.decode_cpus) == (2.5, 4, 2, 0.5, 0.75)
    assert modality_entries(lite, with_text=False)["audio"] == {"encoder": "lite-audio", "dim": 128,
                                                                "rate_hz": 10.0}
    with pytest.raises(InputError, match="is a audio encoder, not a video one"):
        plan_extract("lite", video="wav2vec2")
    with pytest.raises(InputError, match="unknown encoder"):
        plan_extract("lite", audio="vggish")
    with pytest.raises(InputError, match="available presets: paper, lite, leaders, organiser"):
        plan_extract("fast")
    with pytest.raises(InputError, match="needs a text encoder"):
        plan_extract("paper", text="none")


def test_cli_rejects_media_options_for_organiser(tmp_path):
    r = runner.invoke(app, ["extract", str(tmp_path), "--out", str(tmp_path / "f"), "--video-encoder", "lite"])
    assert r.exit_code == 2 and "only for the media presets" in r.output
    r = runner.invoke(app, ["extract", str(tmp_path), "--out", str(tmp_path / "f"), "--preset", "fast"])
    assert r.exit_code == 2 and "'fast' is not one of 'organiser', 'lite', 'paper'" in r.output


def test_resources_never_deadlock_or_fuse():
    from emi_ray.extract.graph import plan_resources

    paper = plan_extract("paper")
    decode, encoder = plan_resources(paper, actors=1, cluster_cpus=2)
    assert decode != encoder and decode + encoder <= 2  # one actor + one decode task fit 2 CPUs
    with pytest.raises(InputError, match="lower --actors"):
        plan_resources(paper, actors=2, cluster_cpus=2)
    assert plan_resources(plan_extract("lite"), actors=2, cluster_cpus=2) == (0.75, 0.25)
