import pytest
import torch

from emi_ray.models.audio import GatedBiLSTM



def lengths_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("gate", [True, False])
def test_padded_batch_equals_per_sample(gate):
    torch.manual_seed(0)
    net = GatedBiLSTM(6, 5, gate=gate, dropout=0.2).eval()
    lengths = [11, 4, 1, 0]
    mask = lengths_mask(lengths, 11)
    x = torch.randn(4, 11, 6).masked_fill(~mask[..., None], 0.0)
    y = net(x, mask)
    assert y.shape == (4, 11, 10) and net.out_dim == 10
    assert torch.isfinite(y).all()
    assert torch.all(y[~mask] == 0)  # padding and the absent row are zero
    for b, L in enumerate(lengths[:3]):
        alone = net(x[b : b + 1, :L], torch.ones(1, L, dtype=torch.bool))
        torch.testing.assert_close(y[b, :L], alone[0], atol=1e-5, rtol=1e-5)


def test_gate_matches_equation_7():
    torch.manual_seed(0)
    net = GatedBiLSTM(3, 4, gate=True).eval()
    x = torch.randn(1, 5, 3)
    mask = torch.ones(1, 5, dtype=torch.bool)
    h, _ = net.lstm(x)
    delta = h - torch.cat([h[:, :1], h[:, :-1]], 1)  # Δh_0 = 0
    expected = torch.sigmoid(net.gate(torch.cat([h, delta], -1))) * h
    torch.testing.assert_close(net(x, mask), expected, atol=1e-6, rtol=1e-5)
    assert GatedBiLSTM(3, 4, gate=False).gate is None
