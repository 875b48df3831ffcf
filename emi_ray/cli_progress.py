"""Per-epoch progress on the console: a live rich bar on a terminal, one plain line per epoch
otherwise (logs, CI, pipes). Both stages: stage II shows validation mean r, stage I recall@1."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SCORES = (("mean_pearson", "valid r"), ("mean_r1", "recall@1"))


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


class EpochProgress:
    """`with EpochProgress(epochs, console, label) as p: run(..., on_epoch=p.on_epoch)`."""

    def __init__(self, epochs: int, console: Console, label: str = "train"):
        self.epochs, self.console, self.label = epochs, console, label
        self.best: float | None = None
        self.seen: list[float] = []  # when each epoch of this session arrived
        self.bar: Progress | None = None

    def __enter__(self) -> EpochProgress:
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[status]}", markup=False), TimeElapsedColumn(), console=self.console,
                                transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.epochs, status="starting…")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def status(self, m: dict[str, Any]) -> str:
        key, name = next(((k, n) for k, n in SCORES if k in m), (None, None))
        parts = [f"loss {m['train_loss']:.4f}"]
        if key is not None:
            score = float(m[key])
            self.best = score if self.best is None else max(self.best, score)
            parts += [f"{name} {score:.4f}", f"best {self.best:.4f}"]
        epoch = int(m["epoch"])
        self.seen.append(time.monotonic())
        if len(self.seen) > 1:  # epoch to epoch, reporting and checkpointing included
            per_epoch = (self.seen[-1] - self.seen[0]) / (len(self.seen) - 1)
        else:
            per_epoch = float(m.get("epoch_s", 0.0))
        left = self.epochs - epoch - 1
        parts.append(f"{per_epoch:.1f} s/epoch")
        if left > 0:
            parts.append(f"≤ {_duration(per_epoch * left)} left")  # early stopping may end it sooner
        return "  ".join(parts)

    def on_epoch(self, m: dict[str, Any]) -> None:
        status = self.status(m)
        epoch = int(m["epoch"]) + 1
        if self.bar is not None:
            self.bar.update(self.task, completed=epoch, status=status)
        else:
            self.console.print(f"{self.label} epoch {epoch}/{self.epochs}  {status}", highlight=False, soft_wrap=True)
