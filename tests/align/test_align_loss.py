"""Weighted InfoNCE (eq. 2), modality->text and symmetric: a hand-computed case, weights 1 = plain
InfoNCE, and the loss gathered across 2 gloo workers equals 1 worker on the same global batch."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from emi_ray.models.contrastive import clip_loss


def test_hand_computed():
    """Eq. (2) normalises over the texts j of each modality row i only; symmetric adds the
    texts' rows over the items and halves the sum: they differ by exactly (l_t - l_m) / 2."""
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    w = torch.tensor([1.0, 0.5])
    sp = lambda z: math.log(1 + math.exp(z))  # -log sigmoid(-z): 2-way cross-entropy
    # m_0.t = (1, 0.6), m_1.t = (0, 0.8); t_0.m = (1, 0), t_1.m = (0.6, 0.8)
    l_m = (1.0 * sp(0.6 - 1.0) + 0.5 * sp(0.0 - 0.8)) / 2  # rows m_i vs texts
    l_t = (1.0 * sp(0.0 - 1.0) + 0.5 * sp(0.6 - 0.8)) / 2  # rows t_i vs modality
    m2t = clip_loss(m, t, 1.0, w, "modality_to_text").item()
    sym = clip_loss(m, t, 1.0, w, "symmetric").item()
    assert m2t == pytest.approx(l_m, abs=1e-6)
    assert sym == pytest.approx(0.5 * (l_m + l_t), abs=1e-6)
    assert sym - m2t == pytest.approx(0.5 * (l_t - l_m), abs=1e-6) and abs(sym - m2t) > 0.02
    assert clip_loss(m, t, 1.0, w).item() == m2t  # the paper's form is the default
    with pytest.raises(ValueError, match="direction"):
        clip_loss(m, t, 1.0, w, "text_to_modality")


def test_unit_weights_equal_plain_info_nce():
    g = torch.Generator().manual_seed(0)
    m, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    scale = 1 / 0.07
    a, b = F.normalize(m, dim=-1), F.normalize(t, dim=-1)
    logits = scale * a @ b.T
    y = torch.arange(8)
    plain = 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))
    assert clip_loss(m, t, scale, torch.ones(8), "symmetric").item() == pytest.approx(plain.item(), rel=1e-6)
    assert clip_loss(m, t, scale, None, "symmetric").item() == pytest.approx(plain.item(), rel=1e-6)
    assert clip_loss(m, t, scale, None).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    w = torch.rand(8, generator=g)
    assert clip_loss(m, t, scale, w, "symmetric").item() != pytest.approx(plain.item(), rel=1e-3)


def _data():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g), torch.rand(8, generator=g),
            torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g))


DIRECTIONS = ("modality_to_text", "symmetric")


def _loss_and_grads(m_in, t_in, w, wm, wt, direction):
    wm, wt = wm.clone().requires_grad_(), wt.clone().requires_grad_()
    loss = clip_loss(m_in @ wm, t_in @ wt, 1 / 0.07, w, direction)
    loss.backward()
    return loss.detach(), wm.grad, wt.grad


def _worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback: the host's own name may not resolve here
    # A file rendezvous: no TCP port to race for on a busy machine.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    m, t, w, wm, wt = _data()
    b = len(m) // world
    sl = slice(rank * b, (rank + 1) * b)
    got = {}
    for d in DIRECTIONS:
        loss, gm, gt = _loss_and_grads(m[sl], t[sl], w[sl], wm, wt, d)
        for x in (loss, gm, gt):  # what DDP does with gradients: average over workers
            dist.all_reduce(x)
            x /= world
        got[d] = {"loss": loss, "gm": gm, "gt": gt}
    if rank == 0:
        torch.save(got, out)
    dist.destroy_process_group()


def test_gathered_loss_matches_single_worker(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "dist.pt")
    for attempt in range(4):  # gloo workers here sometimes abort at start-up (SIGABRT): retry
        try:
            mp.spawn(_worker, args=(2, str(tmp_path / f"rendezvous-{attempt}"), out), nprocs=2, join=True)
            break
        except mp.ProcessExitedException:
            # rank 0 writes only after both ranks' all_reduce: an abort at teardown is harmless
            if os.path.exists(out) or attempt == 3:
                break
    both = torch.load(out, weights_only=True)  # missing file: the workers never finished
    for d in DIRECTIONS:
        got = both[d]
        loss, gm, gt = _loss_and_grads(*_data(), d)
        assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5), d
        torch.testing.assert_close(got["gm"], gm, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["gt"], gt, rtol=1e-4, atol=1e-6)
    assert both["modality_to_text"]["loss"].item() != pytest.approx(both["symmetric"]["loss"].item(), rel=1e-3)
