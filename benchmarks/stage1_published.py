"""Stage I as published (eq. 2: modality->text, confidence-weighted) against the symmetric,
unweighted form, side by side over seeds.

On the built-in synthetic affect corpus (600 items per modality, 15 % mislabelled with
disagreeing raters: its per-rater columns give the weights something to do; the run's
weight distribution is printed to show it) and the built-in synthetic media store (600 mp4s
through the `lite` encoders). Per seed and arm: one stage-I run (its held-out recall@1 per
modality), then stage II on the store mapped through its heads (validation mean r, all
modalities). `--factorial` adds the two mixed arms (direction and weighting apart).

    python benchmarks/stage1_published.py [--seeds 3] [--stage1-epochs 20] [--epochs 12] [--factorial] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ARMS = {"paper (m->t, weighted)": ["stage1.direction=modality_to_text", "stage1.weighted=true"],
        "current (symmetric, unweighted)": ["stage1.direction=symmetric", "stage1.weighted=false"]}
MIXED = {"m->t, unweighted": ["stage1.direction=modality_to_text", "stage1.weighted=false"],
         "symmetric, weighted": ["stage1.direction=symmetric", "stage1.weighted=true"]}
METRICS = ("vision_r1", "audio_r1", "stage2_r")


def ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def run_arm(sets: list[str], seed: int, args, feats, root: Path) -> dict[str, float]:
    """One stage-I run of this arm and seed, then stage II through its heads."""
    from emi_ray.align.aligned_store import pretrained_run, stage2_features
    from emi_ray.config import load_config
    from emi_ray.train.loop import fit

    cfg = load_config(None, [*sets, f"train.seed={seed}", f"stage1.epochs={args.stage1_epochs}"])
    run = pretrained_run(cfg, feats, root)
    m = json.loads((run / "metrics.json").read_text())
    cfg2 = load_config(None, [f"train.seed={seed}", f"train.epochs={args.epochs}", "train.patience=0"])
    cfg2.stage1.run = str(run)
    best = fit(cfg2, stage2_features(cfg2, feats), lambda _m, _c: None)
    return {"vision_r1": m["vision_r1"], "audio_r1": m["audio_r1"], "stage2_r": best["mean_pearson"],
            "chance_r1": m["vision_chance_r1"], "weights": m.get("weights")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--stage1-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=12, help="stage-II epochs")
    ap.add_argument("--factorial", action="store_true", help="also the two mixed arms")
    ap.add_argument("--features", type=Path, default=None, help="a lite store (default: built-in media store)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from emi_ray.workflows.default_store import resolve_features

    feats = resolve_features(args.features, print, media=True)
    arms = {**ARMS, **(MIXED if args.factorial else {})}
    root = Path(tempfile.mkdtemp(prefix="stage1-published-"))
    res: dict[str, list[dict]] = {a: [] for a in arms}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for arm, sets in arms.items():
            r = run_arm(sets, seed, args, feats, root)
            res[arm].append(r)
            print(f"seed {seed} {arm:32s} recall@1 vision {r['vision_r1']:.3f} audio {r['audio_r1']:.3f} "
                  f"stage II r {r['stage2_r']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    w = next(r["weights"] for rs in res.values() for r in rs if r["weights"] and r["weights"]["weighted"])
    print("\nconfidence weights of the training items: " + "; ".join(
        f"{m} n {s['n']} min {s['min']:.2f} median {s['median']:.2f} max {s['max']:.2f} w=1 {100 * s['share_1']:.0f}%"
        for m, s in w.items() if isinstance(s, dict)) + (" (a no-op!)" if w["noop"] else ""))
    chance = res[next(iter(arms))][0]["chance_r1"]
    print(f"mean +- std over {args.seeds} seeds; stage I {args.stage1_epochs} epochs (chance recall@1 "
          f"{chance:.3f}), stage II {args.epochs} epochs on {feats}")
    print(f"{'arm':32s} " + " ".join(f"{k:>16s}" for k in ("recall@1 vision", "recall@1 audio", "stage II mean r")))
    for arm, rs in res.items():
        print(f"{arm:32s} " + " ".join(f"{ms([r[k] for r in rs]):>16s}" for k in METRICS))
    print(f"total {time.perf_counter() - t0:.0f}s")
    if args.out:
        args.out.write_text(json.dumps({"results": res, "args": {k: str(v) for k, v in vars(args).items()}},
                                       indent=2))


if __name__ == "__main__":
    main()
