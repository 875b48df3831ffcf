"""Stage-II training cost: Ray Train (--workers 1) vs the same loop in plain PyTorch.

Measures, side by side in one run on the same feature store:
  * epoch wall time (report-to-report, so reporting and checkpoint upload count) of
    `fit()` called in-process vs under a 1-worker TorchTrainer, after a warm-up epoch;
  * input pipeline: samples/s and the share of step time spent waiting for data;
  * peak RSS of a training process on a store of N synthetic videos (default 5000).

    python benchmarks/train_overhead.py [--features DIR] [--epochs 6] [--rss-videos 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def epoch_walls(history: list[dict]) -> list[float]:
    t = [h["reported_at"] for h in history]
    return [b - a for a, b in zip(t, t[1:])]  # drops epoch 0 (warm-up)


def plain(cfg, features):
    from emi_ray.train.loop import fit

    history = []
    with tempfile.TemporaryDirectory() as d:  # checkpoints written like local mode does
        fit(cfg, features, lambda m, c: history.append(m), checkpoint_root=d)
    return history


def ray_train(cfg, features):
    from emi_ray.train.trainer import run_training

    with tempfile.TemporaryDirectory() as d:
        return run_training(cfg, features, Path(d) / "run").history


RSS_CHILD = """
import resource, sys, json
from emi_ray.config import apply_overrides, Config
from emi_ray.train.loop import fit
cfg = apply_overrides(Config(), ["train.epochs=2", "train.workers=0"])
fit(cfg, sys.argv[1], lambda m, c: None)
print(json.dumps({"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def peak_rss(n_videos: int, workdir: Path) -> dict:
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.organiser import import_organiser

    data, store = workdir / "data", workdir / "features"
    t0 = time.perf_counter()
    write_dataset(data, n_videos=n_videos, seed=1)
    import_organiser(data, store)
    build = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(store)], capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "videos": n_videos, "build_s": build}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default=None)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rss-videos", type=int, default=5000)
    args = ap.parse_args()

    import torch

    from emi_ray.config import Config, apply_overrides
    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.ray_env import init_ray

    torch.set_num_threads(1)
    features = resolve_features(args.features)
    cfg = apply_overrides(Config(), [f"train.epochs={args.epochs}", "train.patience=0", "train.workers=1"])
    init_ray(num_cpus=2)
    # Alternate the two so machine noise hits both alike.
    runs = {"plain": [], "ray": []}
    for _ in range(2):
        runs["plain"].append(plain(cfg, features))
        runs["ray"].append(ray_train(cfg, features))
    med = {k: statistics.median([w for h in v for w in epoch_walls(h)]) for k, v in runs.items()}
    hist = [h for v in runs["plain"] for h in v[1:]]
    n_train = 0
    from emi_ray.data.store import FeatureStore

    n_train = len(FeatureStore(features).ids("train"))
    compute = statistics.median(h["epoch_s"] for h in hist)
    wait = statistics.median(h["data_wait_s"] for h in hist)
    print(f"store: {features} ({n_train} training videos), {args.epochs} epochs x 2 runs each")
    print(f"epoch wall, plain PyTorch loop : {med['plain']:.2f} s")
    print(f"epoch wall, Ray Train 1 worker : {med['ray']:.2f} s")
    print(f"ratio Ray/plain                : {med['ray'] / med['plain']:.3f}  (target <= 1.2)")
    print(f"input pipeline: {n_train / compute:.0f} samples/s; waiting for data {100 * wait / compute:.1f} % "
          f"of step time")
    import ray

    ray.shutdown()
    if args.rss_videos:
        with tempfile.TemporaryDirectory() as d:
            r = peak_rss(args.rss_videos, Path(d))
        print(f"peak RSS training on {r['videos']} synthetic videos: {r['peak_rss_gib']:.2f} GiB (target < 4)")


if __name__ == "__main__":
    main()
