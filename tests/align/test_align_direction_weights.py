"""Stage I as published: both loss directions learn on the synthetic affect corpus, and the
confidence weights a run trains with are returned (metrics.json "weights") and printed, with a
warning when `stage1.weighted=true` does nothing because every weight is 1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emi_ray.config import load_config

SETS = ["train.workers=0", "stage1.lr_max=3e-3", "stage1.lr_min=1e-5", "stage1.batch_size=32",
        "stage1.restart_epochs=10"]


@pytest.fixture(scope="module")
def arrays(affect_corpus):
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import Encoders, corpus_features

    c = load_corpus(affect_corpus)
    return {m: corpus_features(c, m, Encoders()) for m in ("vision", "audio")}


@pytest.mark.parametrize("direction", ["modality_to_text", "symmetric"])
def test_both_directions_learn(arrays, direction):
    from emi_ray.align.loop import pretrain

    cfg = load_config(None, [*SETS, "stage1.epochs=8", f"stage1.direction={direction}"])
    best = pretrain(cfg, arrays, lambda _m, _c: None, dim=64)
    for m in ("vision", "audio"):
        assert best[f"{m}_r1"] >= 3 * best[f"{m}_chance_r1"], (direction, best)


def test_direction_is_validated():
    from emi_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="stage1.direction='both'"):
        load_config(None, ["stage1.direction=both"])
    with pytest.raises(ConfigError, match="stage1.granularity"):
        load_config(None, ["stage1.granularity=segment"])
    assert load_config(None).stage1.direction == "modality_to_text"


def test_weight_stats_of_a_corpus_with_raters(affect_corpus):
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import Encoders, cache_path, corpus_features
    from emi_ray.align.trainer import weight_stats

    c = load_corpus(affect_corpus)
    files = {}
    for m in ("vision", "audio"):
        corpus_features(c, m, Encoders())
        files[m] = str(cache_path(c, m, Encoders()))
    st = weight_stats(files, weighted=True)
    w = np.array([it.weight for it in c.of("audio", "train")])
    assert st["audio"]["n"] == len(w) == 150
    assert st["audio"]["min"] == pytest.approx(w.min()) and st["audio"]["median"] == pytest.approx(np.median(w))
    assert st["audio"]["max"] == pytest.approx(w.max()) and st["audio"]["share_1"] == pytest.approx(np.mean(w >= 1))
    assert st["audio"]["min"] < 0.5 < st["audio"]["median"]  # the mislabelled items' raters disagree
    assert not st["noop"] and not weight_stats(files, weighted=False)["noop"]


@pytest.fixture(scope="module")
def corpus_without_raters(tmp_path_factory):
    """The synthetic generator's corpus with its per-rater columns dropped (as most public corpora)."""
    from emi_ray.align.corpus import load_corpus, write_manifest
    from emi_ray.align.synth import write_affect_corpus

    root = tmp_path_factory.mktemp("no-raters")
    write_affect_corpus(root, n=80, seed=1, modalities=("vision",))
    write_manifest(root, load_corpus(root).items, raters=0)
    return root


def _cli_pretrain(corpus, out, *extra):
    from typer.testing import CliRunner

    from emi_ray.cli import app

    args = ["pretrain", "--affect", str(corpus), "--modality", "vision", "--workers", "0", "--out", str(out),
            "--set", "stage1.epochs=2", "--set", "stage1.batch_size=16", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


def test_pretrain_prints_weights_and_warns_when_they_are_all_one(corpus_without_raters, affect_corpus, tmp_path):
    text = _cli_pretrain(corpus_without_raters, tmp_path / "a")
    assert "every confidence weight of this corpus is 1" in text and "no-op" in text
    assert "vision: n 60, min 1.000 / median 1.000 / max 1.000, w = 1 for 100%" in text
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())["weights"]
    assert saved["noop"] and saved["weighted"] and saved["vision"]["share_1"] == 1.0
    # switched off on purpose: no warning; a corpus with raters: no warning, its spread shown
    assert "no-op" not in _cli_pretrain(corpus_without_raters, tmp_path / "b", "--set", "stage1.weighted=false")
    text = _cli_pretrain(affect_corpus, tmp_path / "c")
    assert "no-op" not in text and "w = 1 for 0%" in text


def test_a_run_from_before_resumes_symmetric(corpus_without_raters, tmp_path):
    """Runs saved before direction/granularity were recorded trained symmetric on clip means: so they resume."""
    import torch
    import yaml

    from emi_ray.align.trainer import INFO, run_pretrain

    run = tmp_path / "old"
    run_pretrain(load_config(None, [*SETS, "stage1.epochs=1", "stage1.direction=symmetric", "stage1.batch_size=16"]),
                 corpus_without_raters, "vision", run_dir=run, in_process=True)
    info = json.loads((run / INFO).read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for d, keys in ((info, ("direction", "granularity")), (cfg["stage1"], ("direction", "granularity"))):
        for k in keys:
            del d[k]
    (run / INFO).write_text(json.dumps(info))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    resumed = load_config(run / "config.yaml", ["stage1.epochs=2"])
    assert resumed.stage1.direction == "modality_to_text"  # what the old config alone would now say ...
    res = run_pretrain(resumed, None, run_dir=run, resume=True, in_process=True)
    st = torch.load(run / "heads.pt", weights_only=True)
    assert res.metrics["epochs_run"] == 2 and st["direction"] == "symmetric" and st["granularity"] == "clip"
