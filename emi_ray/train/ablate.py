"""`emi-ray ablate`: the paper's Table 3 (modules) and Table 4 (modalities) as configs.

Every row is a set of config overrides on top of the base config, trained over several
seeds as one Ray Tune grid (the same function trainable as the search, so rows run in
parallel with ~1 s overhead each). Identical configs (+TFE+QAM and V+A+T) run once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emi_ray.config import Config
from emi_ray.io import atomic_write_text, resolved

NO_TFE = {"model.tcn_layers": 0, "model.segments": 1, "model.audio_gate": False}
NO_QAM = {"model.fusion": "concat"}
# (table, row name, overrides, paper's validation mean r)
ROWS: list[tuple[str, str, dict[str, Any], float]] = [
    ("modules", "base", {**NO_TFE, **NO_QAM}, 0.3505),
    ("modules", "+TFE", dict(NO_QAM), 0.4219),
    ("modules", "+QAM", dict(NO_TFE), 0.4881),
    ("modules", "+TFE+QAM", {}, 0.5126),
    ("modalities", "V", {"model.modalities": ["video"]}, 0.2683),
    ("modalities", "V+T", {"model.modalities": ["video", "text"]}, 0.2834),
    ("modalities", "A", {"model.modalities": ["audio"]}, 0.4703),
    ("modalities", "V+A", {"model.modalities": ["video", "audio"]}, 0.4846),
    ("modalities", "A+T", {"model.modalities": ["audio", "text"]}, 0.4918),
    ("modalities", "V+A+T", {}, 0.5126),
]


def select_rows(tables: str, names: list[str] | None = None) -> list[tuple[str, str, dict, float]]:
    keep = {"both": ("modules", "modalities"), "modules": ("modules",), "modalities": ("modalities",)}
    if tables not in keep:
        from emi_ray.errors import ConfigError

        raise ConfigError(f"--table {tables!r}: choose modules, modalities or both")
    rows = [r for r in ROWS if r[0] in keep[tables]]
    return [r for r in rows if names is None or r[1] in names]


def _key(overrides: dict[str, Any]) -> str:
    return json.dumps(overrides, sort_keys=True)


def run_ablation(base: Config, features: str | Path, seeds: int = 3, tables: str = "both",
                 out_dir: str | Path | None = None, rows: list[str] | None = None,
                 progress: Callable[[str, int, float], None] | None = None) -> dict[str, Any]:
    """Train each row over `seeds` seeds; write ablation.md/.json/.png; return the summary."""
    import ray
    from ray import tune

    from emi_ray.ray_env import init_ray
    from emi_ray.train.trainer import new_run_dir
    from emi_ray.tune.trainable import train_trial

    chosen = select_rows(tables, rows)
    out_dir = Path(out_dir) if out_dir else new_run_dir("ablate")
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = {_key(o): o for _, _, o, _ in chosen}  # dedupe identical rows
    grid = [{**o, "train.seed": base.train.seed + s} for o in configs.values() for s in range(seeds)]
    init_ray()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"CPU": 1}),
        param_space={"base": base.to_dict(), "features": str(resolved(features)),
                     "overrides": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(max_concurrent_trials=cpus, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(out_dir.resolve()), name="ray",
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=0),
    )
    scores: dict[str, list[float]] = {k: [] for k in configs}
    for res in tuner.fit():
        if res.error or not res.metrics:
            raise RuntimeError(f"ablation trial failed: {res.error}")
        o = dict(res.config["overrides"])
        seed = o.pop("train.seed")
        r = float(res.metrics["best_mean_pearson"])
        scores[_key(o)].append(r)
        if progress:
            name = next(n for _, n, ov, _ in chosen if _key(ov) == _key(o))
            progress(name, seed, r)
    summary_rows = []
    for table, name, o, paper in chosen:
        s = scores[_key(o)]
        summary_rows.append({"table": table, "name": name, "mean": float(np.mean(s)), "std": float(np.std(s)),
                             "scores": s, "paper": paper, "overrides": o})
    summary = {"rows": summary_rows, "seeds": seeds, "features": str(features),
               "markdown": str(out_dir / "ablation.md"), "chart": str(out_dir / "ablation.png")}
    atomic_write_text(out_dir / "ablation.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / "ablation.md", markdown(summary_rows, seeds))
    from emi_ray.plots import ablation_chart

    ablation_chart(summary_rows, out_dir / "ablation.png")
    return summary


def markdown(rows: list[dict[str, Any]], seeds: int) -> str:
    titles = {"modules": "Table 3 — modules (TFE = TCN + segments + audio gate; QAM = quality fusion)",
              "modalities": "Table 4 — modalities (all modules)"}
    lines = []
    for table in ("modules", "modalities"):
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        lines += [f"### {titles[table]}", "", f"| row | mean r ± std ({seeds} seeds) | paper (Hume-Vidmimic2 valid) |",
                  "|---|---|---|"]
        lines += [f"| {r['name']} | {r['mean']:.4f} ± {r['std']:.4f} | {r['paper']:.4f} |" for r in sel]
        lines.append("")
    return "\n".join(lines)
