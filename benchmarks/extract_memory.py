"""Peak memory of the extraction pipeline with N vs 10 x N clips: it should stay about flat.

    python benchmarks/extract_memory.py [--clips 40] [--size 224] [--inflight-mb 512] [--actors] [--data DIR]

The lite plan runs fused decode+encode tasks (frames never leave the task that decodes them);
`--actors` runs it the way model encoders run, decode tasks -> encoder actor pool, so the
decoded frames wait in Ray's object store under the `--inflight-mb` budget.

Frames are decoded at `--size` px (default 224, as the clip encoder gets them), so each
decoded row weighs ~150 KB per frame: if the pipeline held everything, 10x the clips would
need ~10x the memory. Each run is a fresh process (fresh Ray) that reports
  * the driver's peak RSS (VmHWM),
  * the peak over Ray's worker processes of each one's peak RSS,
  * the peak of the summed PSS of the driver and all its descendants (Ray's raylet, workers,
    object store pages), sampled every 0.2 s: the whole footprint, shared pages counted once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(root: int) -> list[int]:
    parent: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                parent.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in parent.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_pss_kb = 0
        self.worker_hwm_kb = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            pids = [me, *_children(me)]
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
            for p in pids[1:]:
                self.worker_hwm_kb = max(self.worker_hwm_kb, _kb(f"/proc/{p}/status", "VmHWM:"))
            time.sleep(0.2)


def child(data: Path, out: Path, size: int, inflight_mb: float, actors: bool) -> None:
    import ray

    from emi_ray.extract.driver import run_extract
    from emi_ray.extract.presets import plan_extract

    sampler = Sampler()
    sampler.start()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    plan = plan_extract("lite", models={"lite-video": {"input_size": size}}, inflight_mb=inflight_mb,
                        fuse=False if actors else None)
    t = time.perf_counter()
    s = run_extract(data, out, plan)
    dt = time.perf_counter() - t
    time.sleep(0.5)
    sampler.stop.set()
    sampler.join()
    ray.shutdown()
    print(json.dumps({"done": s.done, "failed": s.failed, "seconds": dt,
                      "driver_peak_rss_mb": _kb("/proc/self/status", "VmHWM:") / 1024,
                      "worker_peak_rss_mb": sampler.worker_hwm_kb / 1024,
                      "tree_peak_pss_mb": sampler.peak_pss_kb / 1024}))


def subset(src: Path, dst: Path, n: int) -> Path:
    """A dataset dir with the first n clips of src (symlinks) and matching split CSVs."""
    from emi_ray.data.layout import read_layout

    ds = read_layout(src)
    ids = sorted(ds.files["raw"])[:n]
    for folder in ("raw", "text"):
        (dst / folder).mkdir(parents=True)
        for i in ids:
            if (p := ds.path(folder, i)) is not None:
                (dst / folder / p.name).symlink_to(p)
    for name in ("train_split.csv", "valid_split.csv"):
        lines = (src / name).read_text().splitlines()
        keep = [ln for ln in lines[1:] if int(ln.split(",")[0]) in set(ids)]
        (dst / name).write_text("\n".join([lines[0], *keep]) + "\n")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40, help="N (the second run uses 10 x N)")
    ap.add_argument("--size", type=int, default=224, help="decode size in px")
    ap.add_argument("--data", type=Path, default=None, help="cache of >= 10N synthetic clips")
    ap.add_argument("--inflight-mb", type=float, default=512, help="the pipeline's object-store budget")
    ap.add_argument("--actors", action="store_true", help="decode tasks -> encoder actor pool (not fused)")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.size, args.inflight_mb, args.actors)
        return
    from emi_ray.data.synth_dataset import write_dataset

    big = 10 * args.clips
    data = args.data or Path(tempfile.gettempdir()) / f"emi-bench-media-{big}"
    if not (data / "raw").is_dir() or len(list((data / "raw").glob("*.mp4"))) < big:
        shutil.rmtree(data, ignore_errors=True)
        write_dataset(data, n_videos=big, seed=0, media=True)
    print(f"lite preset ({'decode tasks -> encoder actors' if args.actors else 'fused decode+encode tasks'}), "
          f"frames decoded at {args.size}px, object-store budget {args.inflight_mb:g} MB; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="emi-mem-") as tmp:
        results = {}
        for n in (args.clips, big):
            d = subset(data, Path(tmp) / f"data{n}", n)
            r = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--inflight-mb",
                                str(args.inflight_mb), *(["--actors"] if args.actors else []), "--child", str(d),
                                str(Path(tmp) / f"out{n}")], capture_output=True, text=True)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode or not line:
                sys.exit(f"run with {n} clips failed:\n{r.stderr[-3000:]}")
            res = results[n] = json.loads(line[-1])
            frames_mb = n * 15 * args.size * args.size * 3 / 2**20  # ~3 s clips at 5 fps
            print(f"{n:5d} clips: {res['seconds']:6.1f}s  driver peak RSS {res['driver_peak_rss_mb']:7.0f} MB  "
                  f"worker peak RSS {res['worker_peak_rss_mb']:7.0f} MB  all processes peak PSS "
                  f"{res['tree_peak_pss_mb']:7.0f} MB  (decoded frames in total: ~{frames_mb:.0f} MB)")
        a, b = results[args.clips], results[big]
        print(f"10x the clips: driver peak x{b['driver_peak_rss_mb'] / a['driver_peak_rss_mb']:.2f}, "
              f"all-process peak x{b['tree_peak_pss_mb'] / a['tree_peak_pss_mb']:.2f}")


if __name__ == "__main__":
    main()
