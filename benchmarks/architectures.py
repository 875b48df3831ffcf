"""The leaderboard's designs side by side, and the architecture search against one design's search.

For each synthetic variant (`default`; `realism`: non-zero means, loud dimensions, person offsets,
long clips) and each seed (a fresh dataset draw *and* a fresh training seed, as in baseline_gap.py):
  * ridge        `emi-ray baseline` on the same store (standardised mean-pooled features);
  * each design  ustc, text_anchor, lstm_mlp and concat_mlp (lstm_mlp with lstm_layers=0 and
                 MSE + Pearson) through the one training core (`train.loop.fit`), same epochs.
Prints each design's validation mean r (mean ± std over seeds) beside the ridge's, then, on the
first variant's seed-0 store, a TPE + ASHA search of the `architecture` space against the same
search with model.arch fixed to the best single design of that variant, at the same trial budget.

    python benchmarks/architectures.py [--seeds 3] [--train-clips 300] [--epochs 8] [--trials 8]
                                       [--variants realism,default] [--out results.json]

Smaller than the defaults of `emi-ray train` so the whole benchmark fits in ~15 min on 2 cores:
data.max_len=32, model.dim=64 for every design (the search keeps the space's own dims).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_gap import make_store, ridge_run, summary  # the same stores and ridge as baseline_gap.py

DESIGNS = {
    "ustc": ["model.arch=ustc"],
    "text_anchor": ["model.arch=text_anchor"],
    "lstm_mlp": ["model.arch=lstm_mlp"],
    "concat_mlp": ["model.arch=lstm_mlp", "model.lstm_layers=0", "train.loss=mse+pearson"],
}
SMALL = ["data.max_len=32", "model.dim=64"]


def design_r(features: Path, sets: list[str], seed: int, epochs: int) -> float:
    """Validation mean r (best epoch) of one design, in-process through the training core."""
    from emi_ray.config import load_config
    from emi_ray.train.loop import fit

    cfg = load_config(None, [*SMALL, *sets, f"train.epochs={epochs}", f"train.seed={seed}"])
    return fit(cfg, features, lambda metrics, checkpoint: None)["mean_pearson"]


def fixed_arch_space(dst: Path, arch: str) -> Path:
    """The architecture space with model.arch fixed (and the other designs' knobs dropped)."""
    import yaml

    from emi_ray.tune.spaces import load_space, space_to_yaml

    doc = yaml.safe_load(space_to_yaml(load_space("architecture")))
    doc["params"].pop("model.arch")
    mine = {"ustc": ("model.fusion", "model.fusion_layers"), "text_anchor": ("model.anchor_layers", "model.anchor_queries"),
            "lstm_mlp": ("model.lstm_hidden", "model.lstm_layers")}
    for other, keys in mine.items():
        if other != arch:
            for key in keys:
                doc["params"].pop(key)
    for spec in doc["params"].values():
        spec.pop("when", None)  # the design's own knobs were conditional on model.arch, now fixed
    doc["fixed"] = {**(doc.get("fixed") or {}), "model.arch": arch}
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def search_best(space: str | Path, features: Path, out: Path, trials: int, max_epochs: int) -> dict:
    from emi_ray.tune.search import run_search
    from emi_ray.tune.settings import SearchRequest

    t = time.perf_counter()
    res = run_search(SearchRequest(space, features, out=out, trials=trials, max_epochs=max_epochs, seed=0,
                                   overrides=SMALL[:1]))  # data.max_len=32 as above; dims are the space's
    best = res.best or {}
    return {"best_r": best.get("mean_pearson"), "params": best.get("params"), "wall_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-clips", type=int, default=300, help="training clips (valid = half, test = half)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--trials", type=int, default=8, help="trial budget of each search (0: no searches)")
    ap.add_argument("--variants", default="realism,default")
    ap.add_argument("--work", type=Path, default=None, help="keep the stores here (re-used when present)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    root = args.work or Path(tempfile.mkdtemp(prefix="architectures-"))
    variants = args.variants.split(",")
    rows, t_start = [], time.time()
    for variant in variants:
        scores: dict[str, list[float]] = {"ridge": [], **{d: [] for d in DESIGNS}}
        for seed in range(args.seeds):
            features = make_store(root, variant, args.train_clips, seed)
            scores["ridge"].append(ridge_run(features, root / "runs" / f"ridge-{variant}-{seed}-{time.time_ns()}")[0])
            for name, sets in DESIGNS.items():
                scores[name].append(design_r(features, sets, seed, args.epochs))
            print(f"{variant:8s} seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()), flush=True)
        for name, xs in scores.items():
            rows.append({"variant": variant, "design": name, "scores": xs, "mean": statistics.mean(xs),
                         "std": statistics.pstdev(xs)})
    result: dict = {"rows": rows, "seeds": args.seeds, "train_clips": args.train_clips, "epochs": args.epochs}
    if args.trials:
        result["search"] = searches(root, variants[0], args, rows)
    result["wall_s"] = time.time() - t_start
    report(result)
    print(f"wall {result['wall_s']:.0f} s; stores in {root}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


def searches(root: Path, variant: str, args, rows: list[dict]) -> dict:
    """The architecture search and the best single design's search, same store and budget."""
    from emi_ray.ray_env import init_ray

    init_ray("local")
    features = make_store(root, variant, args.train_clips, 0)
    mine = [r for r in rows if r["variant"] == variant and r["design"] in ("ustc", "text_anchor", "lstm_mlp")]
    single = max(mine, key=lambda r: r["mean"])["design"]
    stamp = time.time_ns()
    return {"variant": variant, "trials": args.trials, "single_arch": single,
            "architecture": search_best("architecture", features, root / f"search-all-{stamp}", args.trials,
                                        args.epochs),
            "single": search_best(fixed_arch_space(root / f"space-{single}.yaml", single), features,
                                  root / f"search-{single}-{stamp}", args.trials, args.epochs)}


def report(result: dict) -> None:
    print(f"\n| variant | design | validation mean r ({result['seeds']} seeds) | x ridge |\n|---|---|---|---|")
    for r in result["rows"]:
        ridge = next(q["mean"] for q in result["rows"] if q["variant"] == r["variant"] and q["design"] == "ridge")
        print(f"| {r['variant']} | {r['design']} | {summary(r['scores'])} | {r['mean'] / ridge:.2f} |")
    s = result.get("search")
    if s:
        print(f"\nsearch on {s['variant']} (seed-0 store), {s['trials']} trials each:")
        for key, label in (("architecture", "architecture space"), ("single", f"model.arch={s['single_arch']} only")):
            x = s[key]
            r = "none" if x["best_r"] is None else f"{x['best_r']:.3f}"
            print(f"  {label}: best r {r} ({x['wall_s']:.0f} s) params {x['params']}")


if __name__ == "__main__":
    main()
