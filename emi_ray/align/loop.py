"""The stage-I pretrain core: `pretrain(cfg, data, report)`, Ray-agnostic like train/loop.py.

`data` is {modality: arrays} from features.corpus_features (x, text, weight, valid,
prompt_id, expr), or, with `tails` (stage1.train_blocks > 0: {vision|audio|text:
backbones.Tail}), from features.tail_features (states, lens, text_states, text_lens, ...):
then the heads' inputs come from running the trainable tails on the cached prefix states,
and the tails train with the heads. Each step takes a batch per modality (vision-text, audio-text), sums
their weighted InfoNCE losses (stage1.direction: eq. 2's modality->text, or symmetric) and updates
the heads (SGDR per step). With a
process group up (Ray Train, several workers) the global batch stage1.batch_size is split
evenly over the workers, negatives are gathered across them (loss.py) and gradients
averaged (as DDP would). After each epoch: held-out modality->text retrieval
recall@1/@5 (a hit when the retrieved prompt text is the item's own text), and the
expression accuracy of the top-1 text.

Frozen-feature mode standardises the heads' inputs (x per modality, text) per dimension
with statistics of the training items only (input_stats.py, `data.normalize`), in
training and in held-out retrieval alike; the checkpoints (and so heads.pt) keep them
under "input_normalization" (None with tails: their outputs are the model's own).
`stage1.granularity` (granularity.py) says whether the heads train on clip means or on
single frames; the checkpoints keep it with the windows the heads are to be applied over.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from emi_ray.align.granularity import frame_statistics, training_windows
from emi_ray.align.head_inputs import Inputs, retrieval
from emi_ray.align.input_stats import STATE_KEY, from_state, input_stats
from emi_ray.config import Config, stage1_rates
from emi_ray.data.normalize import Normalization
from emi_ray.engine.checkpoints import load_state, report_with_checkpoint
from emi_ray.engine.report import Report
from emi_ray.engine.runtime import agree, check_finite, seed_everything, set_threads, world
from emi_ray.engine.schedule import SGDR
from emi_ray.errors import EmiError
from emi_ray.models.align_heads import DEFAULT_DIM, AlignHeads
from emi_ray.models.contrastive import clip_loss

TAIL_LR_SCALE = 0.01  # backbone blocks train at this fraction of the heads' rate (SGDR-scheduled alike)


class ScaledSGDR(SGDR):
    """SGDR where a param group may carry "lr_scale" (the backbone tails' lower rate)."""

    def _apply(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr() * g.get("lr_scale", 1.0)


@dataclass
class _Run:
    """Everything one stage-I run trains with."""

    mods: list[str]
    inputs: Inputs
    norm: Normalization | None
    heads: AlignHeads
    in_dims: dict[str, int]
    tails: dict[str, Any]
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: ScaledSGDR
    train_idx: dict[str, np.ndarray]
    local_b: int  # rows per worker per step
    steps: int  # steps per epoch
    windows: dict[str, int]  # per head, the window of frames it is applied over (granularity.py)

    def tail_states(self) -> dict[str, dict[str, torch.Tensor]]:
        return {m: t.state() for m, t in self.tails.items()}


def _build(cfg: Config, data: dict[str, dict[str, np.ndarray]], ckpt: dict | None, dim: int,
           tails: dict[str, Any]) -> _Run:
    s1, mods, world_size = cfg.stage1, list(data), world()[1]
    if tails:
        norm = None  # the tails' outputs are the model's own
    elif ckpt is not None:
        norm = from_state(ckpt.get(STATE_KEY))  # what the heads trained with (none: a run from before)
    elif s1.granularity == "frame":  # the heads see frames: standardise them as frames
        norm = frame_statistics(data, input_stats(data, cfg.data.normalize))
    else:
        norm = input_stats(data, cfg.data.normalize)
    inputs = Inputs(data, tails, norm, s1.granularity)
    in_dims = {m: inputs.width(m, m) for m in mods}
    in_dims["text"] = inputs.width(mods[0], "text")
    heads = AlignHeads(in_dims, dim, s1.temperature, s1.learnable_temperature)
    tail_params = [p for t in tails.values() for p in t.trainable()]
    groups = [{"params": list(heads.parameters())}]
    if tail_params:
        groups.append({"params": tail_params, "lr_scale": TAIL_LR_SCALE})
    local_b = max(1, s1.batch_size // world_size)
    train_idx = {m: np.flatnonzero(~data[m]["valid"]) for m in mods}
    for m in mods:
        if len(train_idx[m]) < local_b * world_size:
            raise EmiError(f"stage I: {len(train_idx[m])} {m} training items, fewer than one global batch "
                           f"({local_b * world_size}); lower stage1.batch_size")
    steps = max(len(train_idx[m]) // (local_b * world_size) for m in mods)
    lr_max, lr_min = stage1_rates(s1)
    opt = torch.optim.AdamW(groups, lr=lr_max, weight_decay=cfg.train.weight_decay)
    sched = ScaledSGDR(opt, lr_max, lr_min, s1.restart_epochs, steps)
    return _Run(mods, inputs, norm, heads, in_dims, tails, [*heads.parameters(), *tail_params], opt, sched,
                train_idx, local_b, steps, training_windows(data, s1.granularity))


def _train_epoch(run: _Run, cfg: Config, epoch: int) -> float:
    """One epoch of contrastive steps (each modality's rows cycled); the mean global-batch loss."""
    rank, world_size = world()
    rng = np.random.default_rng([cfg.train.seed, epoch])
    order = {m: rng.permutation(run.train_idx[m]) for m in run.mods}
    run.inputs.draw(rng)  # frame granularity: this epoch's frame of each item
    n_glob, total = run.local_b * world_size, 0.0
    for step in range(run.steps):
        loss = 0.0
        for m in run.mods:
            idx = order[m]
            k = (step * n_glob) % (len(idx) - n_glob + 1)  # cycle the smaller set
            rows = torch.from_numpy(idx[k + rank * run.local_b : k + (rank + 1) * run.local_b])
            w = run.inputs.t[m]["weight"][rows] if cfg.stage1.weighted else None
            loss = loss + clip_loss(run.heads(m, run.inputs(m, m, rows)), run.heads("text", run.inputs(m, "text", rows)),
                                    run.heads.logit_scale(), w, cfg.stage1.direction)
        check_finite(loss, epoch, "stage1.lr_max", what="stage I loss")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if world_size > 1:
            for p in run.params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world_size
            lv = loss.detach().clone()
            dist.all_reduce(lv)
            total += lv.item() / world_size
        else:
            total += loss.item()
        run.opt.step()
        run.sched.step()
    return total / run.steps


def _state(run: _Run, cfg: Config, epoch: int, history: list, best: dict, best_heads: dict | None,
           best_tails: dict | None, dim: int) -> dict[str, Any]:
    state = {"heads": run.heads.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history, "best": best,
             "best_heads": best_heads, "in_dims": run.in_dims, "dim": dim, "config": cfg.to_dict(),
             STATE_KEY: run.norm.to_state() if run.norm is not None else None,
             "granularity": cfg.stage1.granularity, "windows": run.windows}
    if run.tails:
        state.update(tails=run.tail_states(), best_tails=best_tails)
    return state


def _restore(run: _Run, st: dict) -> tuple[int, list, dict, dict, dict | None]:
    run.heads.load_state_dict(st["heads"])
    for m, t in run.tails.items():
        t.load_state(st["tails"][m])
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    return st["epoch"] + 1, st["history"], st["best"], st["best_heads"], st.get("best_tails")


def pretrain(cfg: Config, data: dict[str, dict[str, np.ndarray]], report: Report, *,
             resume_from: str | Path | None = None, checkpoint_root: str | Path | None = None,
             dim: int = DEFAULT_DIM, tails: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the stage-I heads (and with stage1.train_blocks the backbone tails); report each
    epoch (checkpoints as in `train.loop.fit`); return the best epoch (by mean held-out recall@1)."""
    s1 = cfg.stage1
    if s1.train_blocks != 0 and not tails:
        raise EmiError(f"stage1.train_blocks={s1.train_blocks}: pretrain needs the backbone tails "
                       "(emi_ray.align.backbones.Tail) and their cached prefix states")
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.torch_threads)
    ckpt = load_state(resume_from)
    run = _build(cfg, data, ckpt, dim, tails or {})
    start, history, best, best_heads, best_tails = 0, [], {"score": -math.inf, "epoch": -1}, None, None
    if ckpt is not None:
        start, history, best, best_heads, best_tails = _restore(run, ckpt)
        if start >= s1.epochs:
            report(history[-1], None)
            return best
    run.inputs.train(True)
    saved_at = time.monotonic()
    for epoch in range(start, s1.epochs):
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": _train_epoch(run, cfg, epoch)}
        for m in run.mods:
            metrics.update(retrieval(run.heads, m, data[m], run.inputs))
        metrics["mean_r1"] = float(np.mean([metrics.get(f"{m}_r1", 0.0) for m in run.mods]))
        metrics.update(lr=run.sched.lr(), temperature=float(1.0 / run.heads.logit_scale().item()),
                       epoch_s=time.perf_counter() - t0, reported_at=time.time())
        if metrics["mean_r1"] > best["score"]:
            best = {"score": metrics["mean_r1"], "epoch": epoch,
                    **{k: v for k, v in metrics.items() if k.endswith(("_r1", "_r5", "_expr_acc"))}}
            best_heads = {k: v.detach().clone() for k, v in run.heads.state_dict().items()}
            best_tails = run.tail_states() if run.tails else None
        history.append(metrics)
        # a Ray report costs more than many epochs of heads: checkpoint every checkpoint_every_s and at the end
        save = agree(epoch == s1.epochs - 1 or time.monotonic() - saved_at >= s1.checkpoint_every_s)
        saved_at = time.monotonic() if save else saved_at
        state = _state(run, cfg, epoch, history, best, best_heads, best_tails, dim) if save and world()[0] == 0 else None
        report_with_checkpoint(report, metrics, state, checkpoint_root, save=save)
    return best
