import pytest
import torch

from emi_ray.models.temporal import TCN, segment_pool, segment_weights



def lengths_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("kernel", [2, 3])
def test_tcn_shape_and_padding_invariance(kernel):
    torch.manual_seed(0)
    tcn = TCN(8, layers=3, kernel=kernel, dropout=0.1).eval()
    lengths = [10, 6, 1]
    mask = lengths_mask(lengths, 10)
    x = torch.randn(3, 10, 8)
    x_garbage = x.masked_fill(~mask[..., None], 1e3)  # padding content must not matter
    y = tcn(x_garbage, mask)
    assert y.shape == (3, 10, 8)
    assert torch.all(y[~mask] == 0)
    for b, L in enumerate(lengths):
        alone = tcn(x[b : b + 1, :L], torch.ones(1, L, dtype=torch.bool))
        torch.testing.assert_close(y[b, :L], alone[0], atol=1e-5, rtol=1e-5)


def test_tcn_zero_layers_is_identity():
    x = torch.randn(2, 5, 4)
    assert torch.equal(TCN(4, 0, 3)(x, torch.ones(2, 5, dtype=torch.bool)), x)
    assert len(list(TCN(4, 0, 3).parameters())) == 0


def test_segment_pool_hand_computed():
    x = torch.arange(7, dtype=torch.float32).view(1, 7, 1).repeat(1, 1, 2)  # frames 0..6
    mask = lengths_mask([5], 7)  # real frames 0..4
    out = segment_pool(x, mask, 2)  # segments [0, 2) and [2, 5)
    assert out.shape == (1, 2, 2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.5, 3.0]))
    out3 = segment_pool(x, mask, 3)  # [0, 1), [1, 3), [3, 5)
    torch.testing.assert_close(out3[0, :, 0], torch.tensor([0.0, 1.5, 3.5]))


def test_segment_pool_short_sequences():
    x = torch.tensor([[[1.0], [3.0], [0.0]], [[5.0], [0.0], [0.0]], [[0.0], [0.0], [0.0]]])
    mask = lengths_mask([2, 1, 0], 3)
    out = segment_pool(x, mask, 4)  # L=2 < M: frames 0,0,1,1; L=1: frame 0 everywhere
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.0, 1.0, 3.0, 3.0]))
    torch.testing.assert_close(out[1, :, 0], torch.full((4,), 5.0))
    torch.testing.assert_close(out[2], torch.zeros(4, 1))  # absent row → zeros
    one = segment_pool(torch.tensor([[[2.0]]]), torch.ones(1, 1, dtype=torch.bool), 4)
    torch.testing.assert_close(one, torch.full((1, 4, 1), 2.0))


@pytest.mark.parametrize("M", [1, 3, 4, 16])
def test_segment_pool_padded_equals_unpadded(M):
    torch.manual_seed(1)
    lengths = [13, 7, 4, 1]
    x = torch.randn(4, 13, 5)
    mask = lengths_mask(lengths, 13)
    out = segment_pool(x.masked_fill(~mask[..., None], 99.0), mask, M)
    for b, L in enumerate(lengths):
        alone = segment_pool(x[b : b + 1, :L], torch.ones(1, L, dtype=torch.bool), M)
        torch.testing.assert_close(out[b], alone[0])
    if M == 1:
        torch.testing.assert_close(out[:, 0], torch.stack([x[b, :L].mean(0) for b, L in enumerate(lengths)]))


def test_segment_weights_partition():
    mask = lengths_mask([9, 4, 2], 9)
    w = segment_weights(mask, 4)
    assert w.shape == (3, 4, 9)
    assert torch.equal(w.sum(1)[0], torch.ones(9, dtype=torch.long))  # L >= M: each frame once
    assert torch.equal(w.sum(1)[1, :4], torch.ones(4, dtype=torch.long))
    assert (w.sum(-1) >= 1).all()  # every segment has at least one frame
    assert not w[~mask.unsqueeze(1).expand_as(w)].any()
