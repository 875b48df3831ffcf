"""One Ray Train TorchTrainer set-up for both stages: the driver side and the worker side.

The driver calls `run_torch_trainer(loop_fn, payload, ...)`; on every worker `loop_fn(payload)`
calls `run_on_worker(payload, body)`, and `body(resume_from, checkpoint_root, report)` is the
stage's loop (`report`: ray.train.report, recording each epoch in RUN for the driver's
`on_epoch`, engine/progress.py). `workers=0` is Ray Train's local mode (the loop runs in this process); Ray keeps no
checkpoints then, so the loop keeps its own under RUN/checkpoints and resumes from there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from emi_ray.engine.checkpoints import latest_checkpoint
from emi_ray.engine.progress import OnEpoch, ProgressWatcher, recording
from emi_ray.engine.report import Report, quiet_ray_loggers, train_report
from emi_ray.errors import EmiError
from emi_ray.ray_env import RAY_LOG, init_ray, log_ray_to

T = TypeVar("T")
LOCAL_CHECKPOINTS = "local_checkpoints"  # the payload key naming RUN/checkpoints in local mode
RUN_DIR = "run_dir"  # the payload key naming RUN (where rank 0 records progress)

Body = Callable[["str | Path | None", "str | None", Report], Any]


def run_on_worker(payload: dict[str, Any], body: Body) -> None:
    """Worker side: start `body` fresh, or from the checkpoint Ray restored (a restarted worker
    group or a resumed run), or in local mode from RUN/checkpoints."""
    quiet_ray_loggers()
    report = recording(train_report, payload.get(RUN_DIR))
    local_root = payload.get(LOCAL_CHECKPOINTS)
    if local_root:
        body(latest_checkpoint(local_root), local_root, report)
        return
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        body(None, None, report)
        return
    with ckpt.as_directory() as d:
        body(d, None, report)


def run_torch_trainer(loop_fn: Callable[[dict[str, Any]], None], payload: dict[str, Any], run_dir: Path, *,
                      name: str, workers: int, collect: Callable[[Path], T], gpus: float = 0,
                      storage: str | None = None, max_failures: int = 1, placement_strategy: str = "PACK",
                      on_epoch: OnEpoch | None = None) -> T:
    """Fit `loop_fn` on `workers` Ray Train workers (0: in this process) and return
    `collect(checkpoint_dir)` of the last reported checkpoint. `on_epoch(metrics)` is called
    on this thread's behalf (from a watcher thread) as each epoch ends.

    `storage`: Ray's storage path for the run (default RUN/ray); `placement_strategy`: "PACK"
    (fewest nodes) or "SPREAD" (one worker per node where possible: a lost node costs one
    worker; the group restarts from the last checkpoint, `max_failures` times).
    """
    log_ray_to(run_dir / RAY_LOG)
    if workers > 0 and not ray.is_initialized():
        init_ray()
    payload = {**payload, LOCAL_CHECKPOINTS: None if workers else str(run_dir / "checkpoints"),
               RUN_DIR: str(Path(run_dir).resolve())}
    trainer = TorchTrainer(
        loop_fn,
        train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": 1, **({"GPU": gpus} if gpus else {})},
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(
            storage_path=storage or str((run_dir / "ray").resolve()), name=name,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    with ProgressWatcher(run_dir, on_epoch):
        result = trainer.fit()
    if result.checkpoint is None:
        raise EmiError(f"{run_dir}: {name} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        return collect(Path(d))
