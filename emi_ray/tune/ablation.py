"""`emi-ray ablate`: the paper's Table 3 (modules) and Table 4 (modalities) as configs, and the
EMI leaderboard's designs side by side (`--table architectures`, docs/designs.md).

Every row is a set of config overrides on top of the base config, trained over several
seeds as one Ray Tune grid (`experiment.fit_grid`, the same function trainable as the
search, so rows run in parallel with ~1 s overhead each). Identical configs (+TFE+QAM and
V+A+T) train once. Each (row, seed) is reported as its trial ends (`progress`: the row's mean and
std over the seeds done so far); a failed trial fails its seed, not the ablation: the row shows
the error and the tables are still written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from emi_ray.config import Config
from emi_ray.engine.provenance import write_provenance
from emi_ray.engine.rundir import new_run_dir
from emi_ray.errors import ConfigError
from emi_ray.io import atomic_write_text, resolved
from emi_ray.plots import ablation_chart
from emi_ray.ray_env import RAY_LOG, init_ray, log_ray_to
from emi_ray.tune.experiment import GridPoint, TrialRun, fit_grid, mean_std
from emi_ray.tune.trial import TrialSpec

NO_TFE = {"model.tcn_layers": 0, "model.segments": 1, "model.audio_gate": False}
NO_QAM = {"model.fusion": "concat"}
# (table, row name, overrides, reference r: the paper's validation r; for architectures the published test r)
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
    # the leaderboard's designs, beside their published Hume-Vidmimic2 *test* r (not our validation r)
    ("architectures", "ustc", {"model.arch": "ustc"}, 0.68),
    ("architectures", "lstm_mlp", {"model.arch": "lstm_mlp"}, 0.706),
    ("architectures", "text_anchor", {"model.arch": "text_anchor"}, 0.708),
    ("architectures", "concat_mlp", {"model.arch": "lstm_mlp", "model.lstm_layers": 0, "train.loss": "mse+pearson"}, 0.674),
]
DESIGNS = {"ustc": "the paper (USTC, 8th ABAW 2nd)", "lstm_mlp": "per-modality LSTMs + MLP (8th ABAW winner)",
           "text_anchor": "text-anchored cross-attention (10th ABAW winner)",
           "concat_mlp": "pooled features + MLP, MSE + Pearson, EMA (10th ABAW 2nd)"}
TABLES = {"both": ("modules", "modalities"), "modules": ("modules",), "modalities": ("modalities",),
          "architectures": ("architectures",)}


def select_rows(tables: str, names: list[str] | None = None) -> list[tuple[str, str, dict, float]]:
    if tables not in TABLES:
        raise ConfigError(f"--table {tables!r}: choose {', '.join(TABLES)}")
    rows = [r for r in ROWS if r[0] in TABLES[tables]]
    return [r for r in rows if names is None or r[1] in names]


def run_ablation(base: Config, features: str | Path, seeds: int = 3, tables: str = "both",
                 out_dir: str | Path | None = None, rows: list[str] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None, cpus_per_trial: float = 1.0,
                 gpus_per_trial: float = 0.0) -> dict[str, Any]:
    """Train each row over `seeds` seeds (each trial reserves `cpus_per_trial` CPUs and `gpus_per_trial`
    GPUs); write ablation.md/.json/.png; return the summary (its "failed": rows whose every seed failed).

    `progress(update)` as each (row, seed) ends: table, name, seed, score (None: failed), error, and the
    row so far: done, failed (seeds), mean, std (over its scored seeds), seeds (the total per row).
    """
    chosen = select_rows(tables, rows)
    out_dir = Path(out_dir) if out_dir else new_run_dir("ablate")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_ray_to(out_dir / RAY_LOG)  # Ray's own log lines off the console (not with --verbose)
    write_provenance(out_dir, "ablation", features, seeds=seeds, tables=tables, base=base.to_dict())
    init_ray()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    at_once = max(1, int(cpus / cpus_per_trial)) if cpus_per_trial > 0 else cpus
    run = TrialRun(root=out_dir.resolve(), name="ray", max_epochs=base.train.epochs, concurrency=at_once,
                   cpus=cpus_per_trial, gpus=gpus_per_trial)
    trial = TrialSpec(base=base.to_dict(), features=str(resolved(features)))
    tables_of = {name: table for table, name, _, _ in chosen}
    ended: dict[str, list[GridPoint]] = {}

    def point_ended(p: GridPoint) -> None:
        ended.setdefault(p.label, []).append(p)
        if progress:
            row = ended[p.label]
            mean, std = mean_std([q.score for q in row])
            progress({"table": tables_of[p.label], "name": p.label, "seed": p.seed, "score": p.score,
                      "error": p.error, "done": len(row), "failed": sum(q.score is None for q in row),
                      "mean": mean, "std": std, "seeds": seeds})

    points = fit_grid(trial, {name: o for _, name, o, _ in chosen}, [base.train.seed + s for s in range(seeds)], run,
                      on_point=point_ended)
    summary_rows = []
    for table, name, o, paper in chosen:
        mine = [p for p in points if p.label == name]
        mean, std = mean_std([p.score for p in mine])
        errors = [p.error or "no score" for p in mine if p.score is None]
        summary_rows.append({"table": table, "name": name, "mean": mean, "std": std,
                             "scores": [p.score for p in mine], "failed": len(errors),
                             "error": errors[0] if errors else "", "paper": paper, "overrides": o})
    summary = {"rows": summary_rows, "seeds": seeds, "features": str(features),
               "failed": sum(r["mean"] is None for r in summary_rows),
               "markdown": str(out_dir / "ablation.md"), "chart": str(out_dir / "ablation.png")}
    atomic_write_text(out_dir / "ablation.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / "ablation.md", markdown(summary_rows, seeds))
    scored = [r for r in summary_rows if r["mean"] is not None]
    if scored:
        ablation_chart(scored, out_dir / "ablation.png")
    return summary


def markdown(rows: list[dict[str, Any]], seeds: int) -> str:
    lines = []
    for table in ("modules", "modalities", "architectures"):
        sel = [r for r in rows if r["table"] == table]
        if sel:
            lines += design_table(sel, seeds) if table == "architectures" else paper_table(table, sel, seeds)
    return "\n".join(lines)


def paper_table(table: str, sel: list[dict[str, Any]], seeds: int) -> list[str]:
    titles = {"modules": "Table 3 — modules (TFE = TCN + segments + audio gate; QAM = quality fusion)",
              "modalities": "Table 4 — modalities (all modules)"}
    return [f"### {titles[table]}", "", f"| row | mean r ± std ({seeds} seeds) | paper (Hume-Vidmimic2 valid) |",
            "|---|---|---|", *[f"| {r['name']} | {cell(r, seeds)} | {r['paper']:.4f} |" for r in sel], ""]


def design_table(sel: list[dict[str, Any]], seeds: int) -> list[str]:
    header = (f"| design | what | mean r ± std ({seeds} seeds, this store's validation split) | published r "
              "(Hume-Vidmimic2 **test** set; a reference, not comparable) |")
    note = ("The published figures are other teams' test-set scores on the real dataset with their own "
            "features; only the middle column is measured here.")
    return ["### The leaderboard's designs (model.arch)", "", header, "|---|---|---|---|",
            *[f"| {r['name']} | {DESIGNS.get(r['name'], '')} | {cell(r, seeds)} | {r['paper']:.3f} |" for r in sel],
            "", note, ""]


def cell(row: dict[str, Any], seeds: int) -> str:
    """A row's 'mean ± std', with how many seeds failed; 'failed: error' when all did."""
    if row["mean"] is None:
        return "failed: " + row["error"].replace("|", "\\|")
    note = f" ({row['failed']} of {seeds} seeds failed: {row['error']})" if row.get("failed") else ""
    return f"{row['mean']:.4f} ± {row['std']:.4f}{note}"
