"""Per-trial start-up overhead of `emi-ray tune` (Pattern B, reuse_actors=True).

Overhead of a trial = (driver sees the trial start -> driver receives its first epoch)
minus that epoch's own compute (`epoch_s`, measured inside the training core). It covers
scheduling, actor start or reuse, config decoding, reading the store, building the model
and shipping the first result + checkpoint. Cold trials start a new actor (imports, first
read of the store); warm trials reuse one (the store stays cached in the actor).

    python benchmarks/trial_overhead.py                 # built-in synthetic store, 8 trials x 2 epochs
    python benchmarks/trial_overhead.py --trials 12 --epochs 1 --features DIR
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

SPACE = """\
trials: {trials}
max_epochs: {epochs}
concurrency: {concurrency}
scheduler: {{kind: none}}
params:
  model.dropout: {{uniform: [0.0, 0.3]}}
  train.lr_max: {{loguniform: [3.0e-4, 3.0e-3]}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=None, help="feature store (default: built-in synthetic)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--address", default="local", help="Ray address (default: start a local Ray)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="base config override")
    args = ap.parse_args()

    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.ray_env import init_ray
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    feats = resolve_features(args.features, print)
    t0 = time.perf_counter()
    init_ray(args.address)  # "local": our own Ray, never a `ray start` cluster that happens to run here
    ray_start = time.perf_counter() - t0
    started: dict[str, float] = {}
    first: dict[str, tuple[float, dict]] = {}

    def on_event(kind: str, data: dict) -> None:
        now = time.perf_counter()
        if kind == "start":
            started.setdefault(data["trial_id"], now)
        elif kind == "result" and data["trial_id"] not in first:
            first[data["trial_id"]] = (now, data["result"])

    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "overhead.yaml"
        space.write_text(SPACE.format(trials=args.trials, epochs=args.epochs, concurrency=args.concurrency))
        t1 = time.perf_counter()
        res = run_search(SearchRequest(space, feats, out=Path(tmp) / "run", overrides=args.sets), on_event=on_event)
        wall = time.perf_counter() - t1

    order = sorted(started, key=started.get)
    rows = []
    for i, tid in enumerate(order):
        if tid not in first:
            continue
        t_first, result = first[tid]
        to_first = t_first - started[tid]
        rows.append((i, tid, to_first, result["epoch_s"], to_first - result["epoch_s"]))
    cold = [r for r in rows if r[0] < args.concurrency]
    warm = [r for r in rows if r[0] >= args.concurrency]
    print(f"store: {feats}   trials: {len(rows)} x {args.epochs} epochs, {args.concurrency} at a time")
    print(f"ray.init: {ray_start:.1f} s;  search wall (after init): {wall:.1f} s;  failed: {res.counts['failed']}")
    print(f"{'trial':>5} {'id':>10} {'start->1st epoch s':>19} {'epoch compute s':>16} {'overhead s':>11}")
    for i, tid, tf, es, ov in rows:
        print(f"{i:>5} {tid:>10} {tf:>19.2f} {es:>16.2f} {ov:>11.2f}" + ("  (cold: new actor)" if i < args.concurrency
                                                                          else ""))
    if warm:
        print(f"per-trial overhead, warm (reused actor): median {statistics.median(r[4] for r in warm):.2f} s, "
              f"max {max(r[4] for r in warm):.2f} s over {len(warm)} trials")
    if cold:
        print(f"per-trial overhead, cold (first trial per actor): median {statistics.median(r[4] for r in cold):.2f} s")
    print(f"all trials: median {statistics.median(r[4] for r in rows):.2f} s (target <= 5 s)")


if __name__ == "__main__":
    main()
