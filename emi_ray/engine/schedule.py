"""Learning-rate schedule (SGDR, paper eq. 11) and the EMA of weights (eq. 12)."""

from __future__ import annotations

import copy
import math

import torch


class SGDR:
    """Cosine annealing with warm restarts, stepped per batch; cycle length in epochs.

    lr(t) = lr_min + (lr_max - lr_min) * (1 + cos(pi * t_cur / T_i)) / 2, restarting every
    T_i = restart_epochs * steps_per_epoch steps (optimiser momentum is kept at restarts).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_max: float, lr_min: float,
                 restart_epochs: int, steps_per_epoch: int):
        self.optimizer = optimizer
        self.lr_max, self.lr_min = lr_max, lr_min
        self.cycle = max(1, restart_epochs * steps_per_epoch)
        self.step_count = 0
        self._apply()

    def lr(self) -> float:
        t = (self.step_count % self.cycle) / self.cycle
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * t))

    def _apply(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr()

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta, with d warmed up as min(decay, (1+n)/(10+n))

    so that short runs (few hundred steps) are not dominated by the random initialisation.
    Buffers are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
