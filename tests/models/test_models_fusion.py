import pytest
import torch

from emi_ray.config import ModelConfig
from emi_ray.models.fusion import FusionRegressor, QualityFusion, mean_weights



def test_quality_weights_sum_to_one_and_zero_for_absent():
    torch.manual_seed(0)
    qam = QualityFusion(8, 3)
    tokens = torch.randn(4, 3, 5, 8)
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    tokens = tokens * present[:, :, None, None]
    fused, beta = qam(tokens, present)
    assert fused.shape == (4, 5, 8) and beta.shape == (4, 5, 3)
    assert torch.isfinite(fused).all() and torch.isfinite(beta).all()
    torch.testing.assert_close(beta[:3].sum(-1), torch.ones(3, 5))
    absent = ~present.unsqueeze(1).expand_as(beta)
    assert torch.all(beta[absent] == 0)  # exactly zero, not just small
    torch.testing.assert_close(beta[2, :, 1], torch.ones(5))  # a single modality gets all
    torch.testing.assert_close(fused, torch.einsum("bmn,bnmd->bmd", beta, tokens))
    assert torch.all(fused[3] == 0)
    (fused.sum() + beta.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in qam.parameters())


def test_mean_weights():
    present = torch.tensor([[1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    w = mean_weights(present, 2)
    assert w.shape == (2, 2, 3)
    torch.testing.assert_close(w[0, 1], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(w[1, 0], torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("fusion", ["quality", "mean", "concat"])
@pytest.mark.parametrize("layers", [0, 2])
def test_regressor_kinds(fusion, layers):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=8, segments=3, fusion=fusion, fusion_layers=layers, fusion_heads=2)
    reg = FusionRegressor(cfg, 3)
    present = torch.tensor([[1, 1, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    tokens = torch.randn(3, 3, 3, 8) * present[:, :, None, None]
    for train in (True, False):  # eval + no_grad may take the Transformer fast path
        reg.train(train)
        with torch.set_grad_enabled(train):
            pred, w = reg(tokens, present)
        assert pred.shape == (3, 6)
        assert torch.isfinite(pred).all() and (pred >= 0).all() and (pred <= 1).all()
        if fusion == "concat":
            assert w is None
        else:
            assert w.shape == (3, 3, 3)
            torch.testing.assert_close(w.sum(-1), torch.ones(3, 3))


def test_concat_ignores_absent_tokens():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=8, segments=2, fusion="concat", fusion_layers=1, fusion_heads=2)
    reg = FusionRegressor(cfg, 2).eval()
    present = torch.tensor([[True, False]])
    tokens = torch.randn(1, 2, 2, 8)
    other = tokens.clone()
    other[:, 1] = torch.randn(2, 8) * 50
    torch.testing.assert_close(reg(tokens, present)[0], reg(other, present)[0])


def test_initial_outputs_near_prior():
    cfg = ModelConfig(dim=16, segments=2, fusion_heads=2, dropout=0.0)
    pred, _ = FusionRegressor(cfg, 2)(torch.zeros(5, 2, 2, 16), torch.ones(5, 2, dtype=torch.bool))
    assert (pred - 0.2).abs().max() < 0.15
