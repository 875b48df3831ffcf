"""Stage I under Ray Train: what reporting and checkpointing cost per epoch, and what the
mode's default learning rate gives.

Side by side in one run on the built-in synthetic affect corpus (lite encoders), each a
1-worker TorchTrainer `emi-ray pretrain` with the default config otherwise:
  * report cost: the share of each epoch's wall time (report to report) that is not the
    epoch's compute, with a checkpoint every epoch (`stage1.checkpoint_every_s=0`, what the
    loop did before) and with the default (`checkpoint_every_s=30`: the last epoch only here);
  * learning rate: held-out mean recall@1 of the heads with the heads-only default
    (`stage1.lr_max` unset: 3e-3) against the paper's 1e-5 (right for fine-tuning blocks).

    python benchmarks/stage1_report_cost.py [--epochs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def pretrain(sets: list[str], root: Path, name: str) -> tuple[dict, list[dict]]:
    from emi_ray.align.trainer import run_pretrain
    from emi_ray.config import load_config

    res = run_pretrain(load_config(None, sets), run_dir=root / name)
    return res.metrics, res.history


def report_share(history: list[dict]) -> float:
    """1 - compute / wall over epochs 1.. (epoch 0 includes the worker group's start)."""
    t = [h["reported_at"] for h in history]
    walls = [b - a for a, b in zip(t, t[1:])]
    compute = [h["epoch_s"] for h in history[1:]]
    return 1 - statistics.mean(compute) / statistics.mean(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=50)
    args = ap.parse_args()
    from emi_ray.ray_env import init_ray

    init_ray()
    base = ["train.workers=1", f"stage1.epochs={args.epochs}"]
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for name, sets in (("checkpoint every epoch", ["stage1.checkpoint_every_s=0"]),
                           ("default (every 30 s)", []),
                           ("paper lr 1e-5, heads only", ["stage1.lr_max=1e-5", "stage1.lr_min=1e-7"])):
            metrics, history = pretrain(base + sets, root, name.split()[0])
            t = [h["reported_at"] for h in history]
            rows[name] = {"report_share": report_share(history),
                          "wall_per_epoch_s": (t[-1] - t[0]) / (len(t) - 1),
                          "compute_per_epoch_s": statistics.mean(h["epoch_s"] for h in history[1:]),
                          "best_mean_r1": metrics["score"]}
    print(f"{'run':28s} {'wall/epoch':>10s} {'compute':>8s} {'report share':>12s} {'best recall@1':>13s}")
    for name, r in rows.items():
        print(f"{name:28s} {r['wall_per_epoch_s']:9.2f}s {r['compute_per_epoch_s']:7.2f}s "
              f"{100 * r['report_share']:11.1f}% {r['best_mean_r1']:13.3f}")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
