"""The default model against the ridge baseline, on data we did not tune it on.

For each synthetic variant (`default`, and `realism`: non-zero means, a few huge
dimensions, per-identity offsets, long-tailed lengths) and each training-set size, and for
each seed (a fresh dataset draw *and* a fresh training seed), side by side:
  * ridge   `emi-ray baseline`: ridge on standardised mean-pooled features, lambda by 5-fold CV;
  * model   the default `emi-ray train` config (`--workers 0`: the same TorchTrainer path,
            in-process), plus any extra arms given with --arm NAME:key=value,key=value (to
            compare candidate defaults);
  * X+ridge the average of that model's and the ridge's predictions (`emi-ray predict RUN RIDGE`).
Prints validation mean r (mean +- std over seeds) and the model/ridge ratio, and writes JSON.
With --ensemble N it also trains an N-seed ensemble (`emi-ray train --seeds N`) on the first
variant/size and compares it with its best member.

    python benchmarks/baseline_gap.py [--seeds 3] [--sizes 300,1500] [--variants default,realism]
                                      [--arm NAME:k=v,...] [--ensemble 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def make_store(root: Path, variant: str, n_train: int, seed: int) -> Path:
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.organiser import import_organiser

    data, features = root / f"{variant}-{n_train}-{seed}" / "data", root / f"{variant}-{n_train}-{seed}" / "features"
    if not (features / "COMPLETE").exists():  # an interrupted build is redone (import resumes)
        if not (data / "valid_split.csv").exists():
            write_dataset(data, n_videos=2 * n_train, seed=seed, realism=variant == "realism")  # 50 % train
        import_organiser(data, features)
        (features / "COMPLETE").write_text("ok\n")
    return features


def model_run(features: Path, overrides: list[str], seed: int, out: Path) -> tuple[float, Path]:
    """`emi-ray train --workers 0` (the same TorchTrainer path, in-process): validation r and its run."""
    from emi_ray.config import load_config
    from emi_ray.train.trainer import run_training

    cfg = load_config(None, [*overrides, f"train.seed={seed}", "train.workers=0"])
    res = run_training(cfg, features, out)
    return res.metrics["mean_pearson"], res.run_dir


def ridge_run(features: Path, out: Path) -> tuple[float, Path]:
    """`emi-ray baseline`: validation r and its run."""
    from emi_ray.train.baseline import run_baseline

    return run_baseline(features, out)["mean_pearson"], out


def averaged(runs: list[Path]) -> float:
    """Validation r of the average of runs' predictions (`emi-ray evaluate RUN1 RUN2`)."""
    from emi_ray.train.ensemble import evaluate_members

    return evaluate_members(runs, split="valid")["mean_pearson"]


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def summary(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.pstdev(xs):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="300,1500", help="training clips (valid = half, test = half)")
    ap.add_argument("--variants", default="default,realism")
    ap.add_argument("--arm", action="append", default=[], help="NAME:key=value,... an extra model config")
    ap.add_argument("--no-default", action="store_true", help="only the --arm configs")
    ap.add_argument("--ensemble", type=int, default=0, help="also an N-seed ensemble on the first variant/size")
    ap.add_argument("--work", type=Path, default=None, help="keep the stores here (re-used when present)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    arms = ([] if args.no_default else [("model", [])]) + [parse_arm(a) for a in args.arm]
    root = args.work or Path(tempfile.mkdtemp(prefix="baseline-gap-"))
    rows, t_start = [], time.time()
    for variant in args.variants.split(","):
        for n_train in map(int, args.sizes.split(",")):
            scores: dict[str, list[float]] = {"ridge": [], **{name: [] for name, _ in arms},
                                              **{f"{name}+ridge": [] for name, _ in arms}}
            for seed in range(args.seeds):
                features = make_store(root, variant, n_train, seed)
                runs = root / "runs" / f"{variant}-{n_train}-{seed}-{time.time_ns()}"
                r, ridge = ridge_run(features, runs / "ridge")
                scores["ridge"].append(r)
                for name, sets in arms:
                    r, run = model_run(features, sets, seed, runs / name)
                    scores[name].append(r)
                    scores[f"{name}+ridge"].append(averaged([run, ridge]))
                print(f"{variant:8s} n={n_train:5d} seed {seed}: "
                      + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()), flush=True)
            ridge = statistics.mean(scores["ridge"])
            for name, xs in scores.items():
                rows.append({"variant": variant, "train_clips": n_train, "arm": name, "scores": xs,
                             "mean": statistics.mean(xs), "std": statistics.pstdev(xs),
                             "ratio_to_ridge": statistics.mean(xs) / ridge if ridge > 0 else float("nan")})
    result = {"rows": rows, "seeds": args.seeds, "arms": dict(arms), "wall_s": time.time() - t_start}
    if args.ensemble:
        result["ensemble"] = ensemble(root, args.variants.split(",")[0], int(args.sizes.split(",")[0]),
                                      args.ensemble)
    print("\n| variant | train clips | arm | validation mean r | x ridge |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['train_clips']} | {r['arm']} | {summary(r['scores'])} | "
              f"{r['ratio_to_ridge']:.2f} |")
    if args.ensemble:
        e = result["ensemble"]
        print(f"\nensemble of {args.ensemble} ({e['variant']}, {e['train_clips']} train clips): "
              f"{e['mean_pearson']:.3f}; members {e['member_mean']:.3f} ± {e['member_std']:.3f}, "
              f"best member {e['best_member']:.3f}")
    print(f"wall {result['wall_s']:.0f} s; stores in {root}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def ensemble(root: Path, variant: str, n_train: int, seeds: int) -> dict:
    """`emi-ray train --seeds N` (in-process workers) on one store; its validation r and its members'."""
    from emi_ray.config import load_config
    from emi_ray.train.trainer import run_seeds

    features = make_store(root, variant, n_train, 0)
    cfg = load_config(None, ["train.workers=0"])
    res = run_seeds(cfg, features, seeds, root / f"ensemble-{variant}-{n_train}-{time.time_ns()}")
    return {"variant": variant, "train_clips": n_train,
            **{k: res[k] for k in ("mean_pearson", "member_mean", "member_std", "best_member", "members")}}


if __name__ == "__main__":
    main()
