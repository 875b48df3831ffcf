"""The leaderboard's designs (model.arch = text_anchor | lstm_mlp): shapes on every modality subset,
padding invariance, learned tokens for missing modalities, the dispatch and its config checks."""

import itertools

import pytest
import torch

from emi_ray.config import Config, ModelConfig, apply_overrides
from emi_ray.errors import ConfigError
from emi_ray.models import create_model
from emi_ray.models.lstm_mlp import LstmMlpModel
from emi_ray.models.text_anchor import TextAnchorModel

DIMS = {"video": 12, "audio": 10, "text": 7}
DESIGNS = {"text_anchor": TextAnchorModel, "lstm_mlp": LstmMlpModel}
SUBSETS = [list(c) for r in (1, 2, 3) for c in itertools.combinations(DIMS, r)]


def tiny(arch, **kw):
    base = {"arch": arch, "dim": 16, "fusion_heads": 2, "lstm_hidden": 6, "anchor_layers": 2, "anchor_queries": 3,
            "dropout": 0.1}
    return ModelConfig(**{**base, **kw})


def make_batch(lengths_v=(9, 4, 1), lengths_a=(20, 0, 5), text_present=(True, True, False), seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths_v)
    batch = {}
    for m, lengths in (("video", lengths_v), ("audio", lengths_a)):
        t = max(max(lengths), 1)
        mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
        batch[m] = torch.randn(b, t, DIMS[m], generator=g) * mask[..., None]
        batch[f"{m}_mask"] = mask
        batch[f"{m}_present"] = mask.any(1)
    batch["text"] = torch.randn(b, DIMS["text"], generator=g)
    batch["text_present"] = torch.tensor(text_present)
    return batch


def row(batch, b):
    """Clip b alone, with no padding beyond its own frames."""
    one = {}
    for m in ("video", "audio"):
        n = max(int(batch[f"{m}_mask"][b].sum()), 1)
        one[m], one[f"{m}_mask"] = batch[m][b : b + 1, :n], batch[f"{m}_mask"][b : b + 1, :n]
        one[f"{m}_present"] = batch[f"{m}_present"][b : b + 1]
    one["text"], one["text_present"] = batch["text"][b : b + 1], batch["text_present"][b : b + 1]
    return one


@pytest.mark.parametrize("arch", DESIGNS)
@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_every_modality_subset_gives_intensities_and_no_weights(arch, modalities):
    torch.manual_seed(0)
    model = create_model(tiny(arch, modalities=modalities), DIMS)
    assert isinstance(model, DESIGNS[arch])
    for train in (True, False):
        model.train(train)
        pred, weights = model(make_batch(), return_weights=True)
        assert pred.shape == (3, 6) and weights is None  # fusion weights exist only in ustc
        assert torch.isfinite(pred).all() and ((pred > 0) & (pred < 1)).all()


@pytest.mark.parametrize("arch", DESIGNS)
def test_padding_and_batch_mates_do_not_change_predictions(arch):
    torch.manual_seed(0)
    model = create_model(tiny(arch), DIMS).eval()
    batch = make_batch()
    with torch.no_grad():
        pred = model(batch)
        padded = {**batch, "video": torch.cat([batch["video"], torch.full((3, 5, 12), 7.0)], 1),
                  "video_mask": torch.cat([batch["video_mask"], torch.zeros(3, 5, dtype=torch.bool)], 1)}
        torch.testing.assert_close(model(padded), pred)  # garbage in padded frames is never read
        for b in range(3):
            torch.testing.assert_close(model(row(batch, b))[0], pred[b], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch, token", [("text_anchor", "missing.audio"), ("lstm_mlp", "missing.audio"),
                                         ("text_anchor", "missing_text"), ("lstm_mlp", "missing.text")])
def test_a_missing_modality_reads_its_learned_token(arch, token):
    """Moving the token moves exactly the clips that lack the modality (audio: clip 1; text: clip 2)."""
    torch.manual_seed(0)
    model = create_model(tiny(arch, dropout=0.0), DIMS).eval()
    batch = make_batch()
    absent = 1 if "audio" in token else 2
    with torch.no_grad():
        before = model(batch)
        p = model.get_parameter(token)
        p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))  # not a constant: LayerNorm removes those
        after = model(batch)
    moved = (after - before).abs().amax(1) > 1e-4
    assert moved.tolist() == [b == absent for b in range(3)], (after - before)


@pytest.mark.parametrize("arch", DESIGNS)
def test_absent_flag_and_empty_mask_mean_the_same(arch):
    """A dropped modality (train.modality_dropout clears `present`) is read like one with no frames."""
    torch.manual_seed(0)
    model = create_model(tiny(arch), DIMS).eval()
    batch = make_batch(lengths_a=(20, 6, 5))
    dropped = {**batch, "audio_present": torch.tensor([True, False, True])}
    empty = {**batch, "audio_mask": batch["audio_mask"] & torch.tensor([True, False, True])[:, None]}
    with torch.no_grad():
        torch.testing.assert_close(model(dropped), model(empty))
        assert not torch.allclose(model(dropped)[1], model(batch)[1])


def test_text_anchor_without_text_uses_learned_queries():
    torch.manual_seed(0)
    model = create_model(tiny("text_anchor", modalities=["video", "audio"]), DIMS).eval()
    assert model.text_proj is None
    batch = make_batch()
    with torch.no_grad():
        pred = model(batch)
        other_text = {**batch, "text": torch.randn(3, 7)}
        torch.testing.assert_close(model(other_text), pred)  # the transcript is not read at all


def test_concat_mlp_is_lstm_mlp_without_lstm():
    """lstm_layers=0: time means of the inputs, concatenated, into the MLP (the 10th-ABAW runner-up)."""
    model = create_model(tiny("lstm_mlp", lstm_layers=0), DIMS)
    assert all(s.rnn is None for s in model.summaries.values())
    assert model.head[1].in_features == sum(DIMS.values())


@pytest.mark.parametrize("arch", DESIGNS)
def test_every_parameter_but_unused_tokens_gets_a_gradient(arch):
    torch.manual_seed(0)
    model = create_model(tiny(arch, lstm_layers=2), DIMS)
    batch = make_batch()  # audio absent in clip 1, text in clip 2; video everywhere
    target = torch.rand(3, 6, generator=torch.Generator().manual_seed(1))
    torch.nn.functional.mse_loss(model(batch), target).backward()
    unused = {"missing.video"}
    for name, p in model.named_parameters():
        if name not in unused:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", DESIGNS)
def test_linear_path_starts_at_zero_in_every_design(arch):
    torch.manual_seed(0)
    plain = create_model(tiny(arch), DIMS).eval()
    torch.manual_seed(0)
    wide = create_model(tiny(arch, linear_path=True), DIMS).eval()
    batch = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(wide(batch), plain(batch))
        wide.linear.weight.fill_(0.1)
        assert not torch.allclose(wide(batch), plain(batch))


@pytest.mark.parametrize("item, words", [
    ("model.arch=transformer", "model.arch='transformer': choose ustc, text_anchor or lstm_mlp"),
    ("model.lstm_layers=-1", "model.lstm_layers=-1: must be >= 0"),
    ("model.lstm_hidden=0", "model.lstm_hidden=0: must be >= 1"),
    ("model.anchor_queries=0", "model.anchor_queries=0: must be >= 1"),
    ("model.anchor_layers=-2", "model.anchor_layers=-2: must be >= 0"),
])
def test_design_knobs_are_checked(item, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [item])
    assert words in str(e.value)


def test_default_is_the_paper_design():
    from emi_ray.models.emi import EmiModel

    assert Config().model.arch == "ustc"
    assert isinstance(create_model(Config().model, {"video": 8, "audio": 8, "text": 8}), EmiModel)
