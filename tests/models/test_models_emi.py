import itertools

import pytest
import torch

from emi_ray.config import ModelConfig
from emi_ray.errors import ConfigError
from emi_ray.models import EmiModel, create_model


DIMS = {"video": 12, "audio": 10, "text": 7}


def tiny_cfg(**kw):
    base = dict(dim=16, segments=3, tcn_layers=2, audio_hidden=6, fusion_heads=2, fusion_layers=1)
    return ModelConfig(**{**base, **kw})


def make_batch(lengths_v=(9, 4, 1), lengths_a=(20, 0, 5), text_present=(True, True, False), seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths_v)
    batch = {}
    for m, lengths in (("video", lengths_v), ("audio", lengths_a)):
        T = max(max(lengths), 1)
        mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        batch[m] = torch.randn(B, T, DIMS[m], generator=g) * mask[..., None]
        batch[f"{m}_mask"] = mask
        batch[f"{m}_present"] = mask.any(1)
    batch["text"] = torch.randn(B, DIMS["text"], generator=g)
    batch["text_present"] = torch.tensor(text_present)
    return batch


def check_pred(pred, B=3):
    assert pred.shape == (B, 6)
    assert torch.isfinite(pred).all() and (pred >= 0).all() and (pred <= 1).all()


SUBSETS = [list(c) for r in (1, 2, 3) for c in itertools.combinations(DIMS, r)]


@pytest.mark.parametrize("fusion", ["quality", "mean", "concat"])
@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_every_fusion_and_modality_subset(fusion, modalities):
    torch.manual_seed(0)
    model = create_model(tiny_cfg(fusion=fusion, modalities=modalities), DIMS)
    assert isinstance(model, EmiModel)
    batch = make_batch()
    for train in (True, False):
        model.train(train)
        with torch.set_grad_enabled(train):
            pred, w = model(batch, return_weights=True)
        check_pred(pred)
        check_pred(model(batch))
        if fusion == "concat":
            assert w is None
        else:
            assert w.shape == (3, 3, len(modalities))
            present = torch.stack([batch[f"{m}_present"] for m in modalities], 1)
            assert torch.all(w[~present.unsqueeze(1).expand_as(w)] == 0)
            has_any = present.any(1)
            torch.testing.assert_close(w[has_any].sum(-1), torch.ones(int(has_any.sum()), 3))


def test_video_without_audio_is_finite_and_weighted_zero():
    torch.manual_seed(0)
    model = create_model(tiny_cfg(), DIMS)
    batch = make_batch(lengths_a=(20, 0, 5))
    pred, w = model(batch, return_weights=True)
    check_pred(pred)
    assert torch.all(w[1, :, 1] == 0)  # audio absent in row 1
    pred.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_only_one_modality_present_in_a_row():
    torch.manual_seed(0)
    model = create_model(tiny_cfg(fusion="concat"), DIMS).eval()
    batch = make_batch(lengths_v=(0, 3), lengths_a=(0, 2), text_present=(True, False))
    with torch.no_grad():
        check_pred(model(batch), B=2)


@pytest.mark.parametrize("fusion", ["quality", "mean", "concat"])
def test_padding_and_batch_mates_do_not_change_predictions(fusion):
    torch.manual_seed(0)
    model = create_model(tiny_cfg(fusion=fusion), DIMS).eval()
    batch = make_batch()
    pred = model(batch)
    for b in range(3):
        Lv, La = int(batch["video_mask"][b].sum()), int(batch["audio_mask"][b].sum())
        one = {
            "video": batch["video"][b : b + 1, : max(Lv, 1)],
            "video_mask": batch["video_mask"][b : b + 1, : max(Lv, 1)],
            "audio": batch["audio"][b : b + 1, : max(La, 1)],
            "audio_mask": batch["audio_mask"][b : b + 1, : max(La, 1)],
        }
        one.update({k: batch[k][b : b + 1] for k in ("video_present", "audio_present", "text", "text_present")})
        torch.testing.assert_close(model(one)[0], pred[b], atol=1e-5, rtol=1e-4)


def test_no_tcn_and_one_segment():
    torch.manual_seed(0)
    model = create_model(tiny_cfg(tcn_layers=0, segments=1, fusion_layers=0, audio_gate=False), DIMS)
    pred, w = model(make_batch(), return_weights=True)
    check_pred(pred)
    assert w.shape == (3, 1, 3)


def test_missing_dims_raise_config_error():
    with pytest.raises(ConfigError, match="audio"):
        create_model(tiny_cfg(), {"video": 12, "text": 7})
    model = create_model(tiny_cfg(modalities=["video"]), {**DIMS, "extra": 3})  # extra dims are fine
    assert list(model.branches) == ["video"]


@pytest.mark.parametrize("fusion", ["quality", "mean", "concat"])
def test_every_parameter_gets_a_gradient(fusion):
    torch.manual_seed(0)
    model = create_model(tiny_cfg(fusion=fusion, fusion_layers=2), DIMS)
    batch = make_batch(lengths_a=(20, 6, 5), text_present=(True, True, True))
    target = torch.rand(3, 6, generator=torch.Generator().manual_seed(1))
    torch.nn.functional.mse_loss(model(batch), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_learns_a_toy_problem():
    """Targets depend on the mean of the last third of each video sequence: 150 Adam steps
    must more than halve the MSE with all three branches and QAM in the loop."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    N, T = 64, 12
    lengths = torch.randint(6, T + 1, (N,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    video = torch.randn(N, T, DIMS["video"], generator=g) * mask[..., None]
    window = mask & (torch.arange(T)[None, :] >= (2 * lengths[:, None]) // 3)
    wmean = (video * window[..., None]).sum(1) / window.sum(1, keepdim=True)
    W = torch.randn(DIMS["video"], 6, generator=g)
    y = torch.sigmoid(1.5 * wmean @ W - 1.0)
    amask = torch.ones(N, 8, dtype=torch.bool)
    batch = {
        "video": video, "video_mask": mask, "video_present": torch.ones(N, dtype=torch.bool),
        "audio": torch.randn(N, 8, DIMS["audio"], generator=g), "audio_mask": amask,
        "audio_present": torch.ones(N, dtype=torch.bool),
        "text": torch.randn(N, DIMS["text"], generator=g), "text_present": torch.ones(N, dtype=torch.bool),
    }
    model = create_model(tiny_cfg(dropout=0.0, fusion_layers=1), DIMS)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        start = torch.nn.functional.mse_loss(model(batch), y).item()
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = torch.nn.functional.mse_loss(model(batch), y).item()
    assert end < 0.5 * start, (start, end)


def test_linear_path_regresses_on_masked_time_means_and_starts_at_zero():
    from emi_ray.models.emi import pooled_inputs

    batch = make_batch()
    pooled = pooled_inputs(batch, ["video", "audio", "text"])
    assert pooled.shape == (3, sum(DIMS.values()))
    torch.testing.assert_close(pooled[0, :12], batch["video"][0, :9].mean(0))  # only the real frames
    assert (pooled[1, 12:22] == 0).all()  # audio absent for clip 1
    assert (pooled[2, 22:] == 0).all()  # text absent for clip 2
    torch.manual_seed(0)
    plain = create_model(tiny_cfg(), DIMS).eval()
    torch.manual_seed(0)
    wide = create_model(tiny_cfg(linear_path=True), DIMS).eval()
    torch.testing.assert_close(wide(batch), plain(batch))  # zero-initialised: the same model at first
    with torch.no_grad():
        wide.linear.weight.fill_(0.1)
    assert not torch.allclose(wide(batch), plain(batch))
