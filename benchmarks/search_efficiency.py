"""Search efficiency: TPE + ASHA against a random search without early stopping.

For each seed: a random search (Optuna RandomSampler, no early stopping) of R trials x E
epochs over the fusion space sets the target, its best validation mean r (best epoch of
any trial). Then TPE + ASHA (the `emi-ray tune` defaults) runs over the same space; we
count the trial-epochs it had trained (every reported epoch of every trial, in the order
the driver received them) when an epoch first reached the target. The figure is that
count as a fraction of the random search's R x E trial-epochs; the median over seeds is
reported (the issue's target: <= 50 %). A TPE run that never reaches the target counts
as its whole spend and is flagged.

    python benchmarks/search_efficiency.py                       # 3 seeds, 24 random trials x 8 epochs
    python benchmarks/search_efficiency.py --seeds 1 --random-trials 12 --epochs 4   # shrunk
    python benchmarks/search_efficiency.py --keep runs/ ...       # keep the search run directories
    python benchmarks/search_efficiency.py --random-from runs/    # reuse kept random searches (targets)

The random baseline does not depend on the TPE/ASHA settings, so `--random-from DIR` reads
each seed's target and spend from DIR/random-<seed>/optuna.db (every epoch of every trial
is an intermediate value there: the trial's best r so far, so their maximum is the best epoch
of any trial) instead of re-running it. TPE + ASHA optimise that best-epoch r (the searcher is
told it; ASHA compares trials by it at its rungs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def space_variant(src: Path, dst: Path, epochs: int, scheduler: str) -> Path:
    import yaml

    from emi_ray.tune.spaces import load_space, space_to_yaml

    doc = yaml.safe_load(space_to_yaml(load_space(src)))
    doc["max_epochs"] = epochs
    if scheduler == "none":
        doc["scheduler"] = {"kind": "none"}
    elif doc["scheduler"].get("kind") == "asha":
        doc["scheduler"]["grace_period"] = min(doc["scheduler"]["grace_period"], epochs)
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def run(space: Path, feats, out: Path, trials: int, seed: int, sampler: str, sets: list[str], concurrency: int):
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    curve: list[float] = []  # mean r of every reported trial-epoch, in arrival order

    def on_event(kind: str, data: dict) -> None:
        if kind == "result":
            curve.append(float(data["result"]["mean_pearson"]))

    t = time.perf_counter()
    res = run_search(SearchRequest(space, feats, out=out, trials=trials, seed=seed, sampler=sampler, overrides=sets,
                                   concurrency=concurrency), on_event=on_event)
    return res, curve, time.perf_counter() - t


def stored_random(run_dir: Path) -> tuple[float, int]:
    """(best mean r over every epoch of every trial, trial-epochs spent) of a kept random search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    values = [v for t in study.trials for v in t.intermediate_values.values()]
    return max(values), len(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=None, help="feature store (default: built-in synthetic)")
    ap.add_argument("--space", default="fusion")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random-trials", type=int, default=24)
    ap.add_argument("--tpe-trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.01,
                    help="also report trial-epochs to get within this much r of the target (noise level)")
    ap.add_argument("--keep", default=None, help="keep the search run directories here")
    ap.add_argument("--random-from", type=Path, default=None,
                    help="reuse the random searches kept in this directory (random-<seed>/) as targets")
    ap.add_argument("--address", default="local", help="Ray address (default: start a local Ray)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="base config override")
    args = ap.parse_args()

    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.ray_env import init_ray
    from emi_ray.tune.spaces import resolve_space_path

    feats = resolve_features(args.features, print)
    init_ray(args.address)  # "local": our own Ray, never a `ray start` cluster that happens to run here
    fractions, near_fracs, lines = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.keep) if args.keep else Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        src = resolve_space_path(args.space)
        rnd_space = space_variant(src, tmp / "random.yaml", args.epochs, "none")
        tpe_space = space_variant(src, tmp / "tpe.yaml", args.epochs, "asha")
        for seed in range(args.seeds):
            if args.random_from and (args.random_from / f"random-{seed}" / "optuna.db").is_file():
                target, spend = stored_random(args.random_from / f"random-{seed}")
                r_wall = float("nan")
            else:
                _, r_curve, r_wall = run(rnd_space, feats, tmp / f"random-{seed}", args.random_trials, seed, "random",
                                         args.sets, args.concurrency)
                target, spend = max(r_curve), len(r_curve)
            t_res, t_curve, t_wall = run(tpe_space, feats, tmp / f"tpe-{seed}", args.tpe_trials, seed, "tpe",
                                         args.sets, args.concurrency)
            hit = next((i + 1 for i, v in enumerate(t_curve) if v >= target), None)
            need = hit if hit is not None else len(t_curve)
            frac = need / spend
            fractions.append(frac)
            near = next((i + 1 for i, v in enumerate(t_curve) if v >= target - args.tolerance), None)
            near_fracs.append((near if near is not None else len(t_curve)) / spend)
            line = (f"seed {seed}: random {spend // args.epochs} trials x {args.epochs} ep = {spend} trial-epochs "
                    f"({r_wall:.0f} s), best r {target:.4f};  TPE+ASHA {args.tpe_trials} trials = {len(t_curve)} "
                    f"trial-epochs ({t_wall:.0f} s, {t_res.counts['stopped early']} stopped early), best r "
                    f"{max(t_curve):.4f};  " + (f"reached the target after {hit} trial-epochs = {frac:.1%} of random"
                                                if hit else f"did NOT reach the target ({frac:.1%} spent)")
                    + f"; within {args.tolerance} of it after {near_fracs[-1]:.1%}")
            lines.append(line)
            print(line, flush=True)
    print("\n".join(["", "summary:"] + lines))
    med = statistics.median(fractions)
    print(f"median over {args.seeds} seed(s): TPE+ASHA needed {med:.1%} of the random search's trial-epochs "
          f"to reach its best validation mean r (target <= 50%: {'met' if med <= 0.5 else 'MISSED'})")
    print(f"median over {args.seeds} seed(s): {statistics.median(near_fracs):.1%} to get within "
          f"{args.tolerance} r of it")


if __name__ == "__main__":
    main()
