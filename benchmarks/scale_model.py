"""Scale model: wall time and cost of the full dataset on a Ray cluster with K GPU workers.

From per-clip extraction and per-epoch training costs measured here (or read from a JSON
of figures, e.g. measured on a GPU machine), estimate for ~17,000 videos (Hume-Vidmimic2:
8072 train / 4588 valid / 4586 test) and K = 1, 2, 4, 8 g5.xlarge workers:
  * extract  (Ray Data, one encoder actor per GPU; embarrassingly parallel),
  * tune     (64 trials, one GPU each, K at a time, ASHA stops weak trials early),
  * train --best (Ray Train DDP over K GPUs; data-parallel efficiency < 1).

    python benchmarks/scale_model.py                      # measure here (CPU), print the table
    python benchmarks/scale_model.py --figures figs.json  # use given figures (keys as printed by --dump)
    python benchmarks/scale_model.py --dump figs.json     # write the figures used, to edit or refresh

Measured here: the organiser import per clip (CPU) and a stage-II epoch of the default
(paper-sized) model per training clip (CPU, 1 thread). Not measurable here (no GPU, no
model weights): the per-clip cost of the paper encoders on a GPU and the GPU speed-up of
training; those are ASSUMPTIONS, printed as such; replace them with GPU measurements.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

N_TRAIN, N_VALID, N_TEST = 8072, 4588, 4586

DEFAULTS = {
    # --- assumptions (no GPU here); per clip of ~7 s on one g5.xlarge (A10G) -------------------
    "extract_gpu_s_per_clip": 0.9,     # decode 5 fps (CPU) + CLIP ViT-L/14 ~35 frames + wav2vec2 + whisper
    "train_gpu_speedup": 8.0,          # stage-II step on an A10G vs 1 CPU thread here (small model)
    "ddp_efficiency": 0.85,            # per-GPU efficiency of data-parallel training (gloo/NCCL, 4 vCPU nodes)
    "extract_efficiency": 0.95,        # Ray Data actor pool, I/O from shared storage
    "asha_epoch_fraction": 0.45,       # mean epochs run per trial / max epochs under ASHA (grace 1, factor 2-3)
    "trial_overhead_s": 1.0,           # per trial, function trainable with reuse_actors (benchmarks/trial_overhead.py)
    "startup_s": 60.0,                 # per job: worker group start, dataset load
    "node_boot_s": 300.0,              # autoscaler: g5.xlarge boot + setup_commands (cached AMI)
    "search_trials": 64, "search_max_epochs": 20, "best_epochs": 20,
    "price_gpu_h": 1.006,              # g5.xlarge on-demand us-west-2 (spot is ~60 % less)
    "price_head_h": 0.192,             # m5.xlarge head
    # --- measured here (filled by measure()) ---------------------------------------------------
    "import_cpu_s_per_clip": None,     # organiser .pkl import (restricted unpickler) + Parquet write
    "train_cpu_s_per_clip_epoch": None,  # default model, 1 torch thread, per training clip (eval included)
    "measured_on": None,
}


def measure(n_videos: int = 300, epochs: int = 2) -> dict:
    import torch

    from emi_ray.config import load_config
    from emi_ray.data.store import FeatureStore
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.organiser import import_organiser
    from emi_ray.train.loop import fit

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        data, feats = Path(d) / "data", Path(d) / "features"
        write_dataset(data, n_videos=n_videos, seed=0)
        t = time.perf_counter()
        import_organiser(data, feats)
        import_s = (time.perf_counter() - t) / n_videos
        n_train = len(FeatureStore(feats).ids("train"))
        cfg = load_config(None, [f"train.epochs={epochs}", "train.patience=0", "train.torch_threads=1"])
        hist: list[dict] = []
        fit(cfg, feats, lambda m, c: hist.append(m))
        epoch_s = min(h["epoch_s"] for h in hist)  # the fastest epoch: least disturbed by other load
    return {"import_cpu_s_per_clip": import_s, "train_cpu_s_per_clip_epoch": epoch_s / n_train,
            "measured_on": f"this machine, CPU, synthetic {n_videos} videos ({n_train} train), default model"}


def estimate(f: dict, k: int) -> dict:
    n_all = N_TRAIN + N_VALID + N_TEST
    boot = f["node_boot_s"]
    extract_s = boot + f["startup_s"] + n_all * f["extract_gpu_s_per_clip"] / (k * f["extract_efficiency"])
    epoch_1gpu = N_TRAIN * f["train_cpu_s_per_clip_epoch"] / f["train_gpu_speedup"]
    trial_s = f["search_max_epochs"] * f["asha_epoch_fraction"] * epoch_1gpu + f["trial_overhead_s"]
    waves = -(-f["search_trials"] // k)
    tune_s = boot + f["startup_s"] + waves * trial_s
    eff = 1.0 if k == 1 else f["ddp_efficiency"]
    best_s = boot + f["startup_s"] + f["best_epochs"] * epoch_1gpu / (k * eff)
    rows = {}
    for name, s in (("extract", extract_s), ("tune", tune_s), ("train --best", best_s)):
        rows[name] = {"wall_s": s, "usd": s / 3600 * (k * f["price_gpu_h"] + f["price_head_h"])}
    return rows


def fmt_t(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.0f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--figures", type=Path, help="JSON of figures (any subset of the keys; others: defaults)")
    ap.add_argument("--dump", type=Path, help="write the figures used to this JSON")
    ap.add_argument("--workers", default="1,2,4,8", help="K values, comma-separated")
    ap.add_argument("--videos", type=int, default=300, help="synthetic videos to measure on")
    args = ap.parse_args()
    f = dict(DEFAULTS)
    if args.figures:
        f.update(json.loads(args.figures.read_text()))
    if f["import_cpu_s_per_clip"] is None or f["train_cpu_s_per_clip_epoch"] is None:
        f.update(measure(args.videos))
    if args.dump:
        args.dump.write_text(json.dumps(f, indent=2) + "\n")
    print(f"figures ({f['measured_on']}):")
    print(f"  measured  import (organiser preset): {f['import_cpu_s_per_clip'] * 1000:.1f} ms/clip CPU "
          f"-> {(N_TRAIN + N_VALID + N_TEST) * f['import_cpu_s_per_clip'] / 60:.1f} min for all "
          f"{N_TRAIN + N_VALID + N_TEST} clips on one core")
    print(f"  measured  train epoch, default model: {f['train_cpu_s_per_clip_epoch'] * 1000:.2f} ms/train clip "
          f"(1 CPU thread) -> {N_TRAIN * f['train_cpu_s_per_clip_epoch'] / 60:.1f} min/epoch on 8072 clips")
    print(f"  assumed   paper extraction {f['extract_gpu_s_per_clip']} s/clip/GPU; training GPU speed-up "
          f"x{f['train_gpu_speedup']}; DDP efficiency {f['ddp_efficiency']}; ASHA epoch fraction "
          f"{f['asha_epoch_fraction']}; node boot {f['node_boot_s']:.0f} s; g5.xlarge ${f['price_gpu_h']}/h, "
          f"head ${f['price_head_h']}/h")
    print()
    ks = [int(x) for x in args.workers.split(",")]
    head = "| stage | " + " | ".join(f"K={k}: wall | cost" for k in ks) + " |"
    print(head)
    print("|---|" + "---|---|" * len(ks))
    est = {k: estimate(f, k) for k in ks}
    for stage in ("extract", "tune", "train --best"):
        cells = [f"{fmt_t(est[k][stage]['wall_s'])} | ${est[k][stage]['usd']:.2f}" for k in ks]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    tot = [f"{fmt_t(sum(r['wall_s'] for r in est[k].values()))} | "
           f"${sum(r['usd'] for r in est[k].values()):.2f}" for k in ks]
    print("| **all three** | " + " | ".join(tot) + " |")
    print(f"\n(tune: {f['search_trials']} trials x up to {f['search_max_epochs']} epochs, K at a time; "
          f"train --best: {f['best_epochs']} epochs; each stage includes one node boot)")


if __name__ == "__main__":
    main()
