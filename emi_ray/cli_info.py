"""`emi-ray info` (registered on cli.app): a feature store's manifest and statistics, or how a run
directory was made (provenance, config changes, metrics)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from emi_ray.cli import app, handles_errors, notify, out, print_scores


@app.command()
@handles_errors
def info(
    path: Optional[str] = typer.Argument(None, metavar="[FEATURES|RUN]",
                                         help="Feature store (a directory or a URI such as s3://bucket/features; "
                                              "default: built-in synthetic), or a run directory: how it was made "
                                              "(provenance.json), its config and metrics."),
    features: Optional[str] = typer.Option(None, "--features", help="Feature store (the same as the FEATURES "
                                                                    "argument)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    stats: bool = typer.Option(False, "--stats", help="Compute the train split's normalisation statistics "
                                                      "(zscore and robust) and keep them in the store, so "
                                                      "runs and search trials read them instead of recomputing."),
) -> None:
    """Counts per split, feature dims and sequence lengths of a feature store; or what a run directory is."""
    from emi_ray.errors import EmiError

    if path is not None and features is not None and path != features:
        raise EmiError(f"info: give the store once (FEATURES {path!r} or --features {features!r})")
    features = features or path
    if features is not None and path is not None:
        from emi_ray.engine.provenance import is_run_dir

        if is_run_dir(path):
            if stats:
                raise EmiError(f"{path}: --stats is for a feature store, not a run directory")
            return _print_run(path, as_json)
    from emi_ray.workflows.default_store import resolve_features
    from emi_ray.data.store import FeatureStore

    store = FeatureStore(resolve_features(features, notify))
    summary = store.info()
    if stats:
        from emi_ray.data.normalize import MODES, write_store_stats

        summary["stats"] = {mode: _stats_summary(write_store_stats(store, mode)) for mode in MODES if mode != "none"}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(Text.assemble((str(summary["path"]), "bold"), f"  ({summary['command']})"), highlight=False)
    out.print("videos: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
              + f"; import errors: {summary['errors']}")
    t = Table("modality", "encoder", "dim", "rate Hz", "missing", "length min/p50/mean/p95/max")
    for m, e in summary["modalities"].items():
        ln = e.get("length")
        t.add_row(m, e["encoder"], str(e["dim"]), str(e.get("rate_hz") or "-"), str(e.get("missing", "-")),
                  f"{ln['min']}/{ln['p50']:.0f}/{ln['mean']:.1f}/{ln['p95']:.0f}/{ln['max']}" if ln else "-")
    out.print(t)
    if stats:
        t = Table("statistics", "modality", "|shift| mean", "scale min/median/max", "constant dims")
        for mode, per in summary["stats"].items():
            for m, e in per.items():
                t.add_row(mode, m, f"{e['shift']:.3g}", "/".join(f"{v:.3g}" for v in e["scale"]), str(e["constant"]))
        out.print(t)
        out.print(f"statistics of the train split kept in {store.root}/stats/ (zscore.json, robust.json)")


def _print_run(run: str, as_json: bool) -> None:
    """`info RUN`: provenance, config (what differs from the defaults) and metrics of a run directory."""
    from emi_ray.engine.provenance import run_summary

    s = run_summary(run)
    if as_json:
        out.print_json(json.dumps(s, default=str))
        return
    p = s["provenance"]
    out.print(Text.assemble((str(s["path"]), "bold"), f"  ({s['kind']} run)"), highlight=False)
    if p is None:
        out.print("provenance: none recorded (no provenance.json: the run was made before emi-ray recorded it)")
    else:
        git = p.get("git_commit")
        dirty = " + uncommitted changes" if p.get("git_dirty") else ""
        git_s = "not a git checkout" if git is None else f"git {git[:12]}{dirty}"
        pk = p.get("packages") or {}
        out.print(f"command:    {p.get('command')}", highlight=False)
        out.print(f"made:       {p.get('created')} by emi-ray {p.get('emi_ray')} ({git_s}) in {p.get('cwd')}",
                  highlight=False)
        out.print("versions:   " + ", ".join([f"python {p.get('python')}"] + [f"{k} {pk[k]}" for k in
                                                                          ("torch", "ray", "optuna") if pk.get(k)]),
                  highlight=False)
        if p.get("features"):
            digest = p.get("features_manifest_sha256")
            note = "  (the store's manifest has changed since)" if s["store_changed"] else ""
            out.print(Text.assemble(f"features:   {p['features']}  (manifest sha256 {(digest or '-')[:16]})",
                                    (note, "yellow")), highlight=False)
        for r in p.get("resumed") or []:
            out.print(f"resumed:    {r.get('created')}: {r.get('command')}", highlight=False)
    changes = s["config_changes"]
    if s["config"] is not None:
        what = "config (differs from the defaults)" if {"data", "train"} & set(s["config"]) else "config"
        shown = {k: (f"[{len(v)} values]" if isinstance(v, list) and len(v) > 6 else v) for k, v in changes.items()}
        out.print(f"{what}: " + (", ".join(f"{k}={v}" for k, v in shown.items()) or "the defaults"),
                  highlight=False, markup=False)
    _print_run_metrics(s["kind"], s["metrics"])


def _print_run_metrics(kind: str, m) -> None:
    if not isinstance(m, dict):
        out.print("metrics: none yet (the run has not finished)")
        return
    if kind == "search":
        b, c = m.get("best") or {}, m.get("counts") or {}
        out.print(f"space {m.get('space', '?')}, trials: {c.get('total', '?')} ({c.get('complete', '?')} complete, "
                  f"{c.get('failed', '?')} failed); "
                  + (f"best: trial {b.get('number')}, validation mean r {b.get('mean_pearson'):.4f}"
                     if b.get("mean_pearson") is not None else "no best trial"), highlight=False)
        return
    if kind == "ablation":
        t = Table("table", "row", "mean r", "± std")
        for row in m.get("rows", []):
            t.add_row(row["table"], row["name"], f"{row['mean']:.4f}", f"{row['std']:.4f}")
        out.print(t)
        return
    scalars = {k: v for k, v in m.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
               and k != "run_dir"}
    out.print("metrics: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in scalars.items()), highlight=False, markup=False)
    if isinstance(m.get("per_emotion"), dict):
        print_scores({"mean_pearson": m.get("mean_pearson", 0.0), "per_emotion": m["per_emotion"]}, False)


def _stats_summary(norm) -> dict:
    import numpy as np

    return {m: {"shift": float(np.abs(norm.mean[m]).mean()),
                "scale": [float(np.min(norm.scale[m])), float(np.median(norm.scale[m])), float(np.max(norm.scale[m]))],
                "constant": norm.constant.get(m, 0)} for m in norm.mean}
