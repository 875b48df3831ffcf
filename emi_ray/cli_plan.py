"""`--dry-run` of train, tune and pretrain: the resolved config and what would run; nothing is created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emi_ray.cli import out


def planned_features(features: str | Path | None, media: bool = False) -> dict[str, Any]:
    """The store a run would read: the given one, or the built-in default (not built here)."""
    from emi_ray.io import exists, join, resolved
    from emi_ray.workflows.default_store import planned_features as planned

    path = planned(features, media=media)
    found = bool(_safe(lambda: exists(join(path, "manifest.json"))))
    return {"features": str(resolved(path)), "features_exists": found, "features_default": not features}


def _safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001  an unreachable URI is reported as missing, not raised
        return False


def print_plan(command: str, config: dict[str, Any] | None, plan: dict[str, Any], as_json: bool) -> None:
    """The config as YAML, then `key: value` lines of what would run (or one JSON object)."""
    import yaml

    if as_json:
        out.print_json(json.dumps({"dry_run": True, "command": command, **plan, "config": config}, default=str))
        return
    if config is not None:
        out.print("# resolved config", highlight=False)
        out.print(yaml.safe_dump(config, sort_keys=False).rstrip(), highlight=False, markup=False)
    out.print(f"# emi-ray {command} would run (dry run: nothing was created)", highlight=False)
    width = max(len(k) for k in plan)
    for k, v in plan.items():
        if k == "features_default" and not v:
            continue
        shown = "(built on first use)" if k == "features_exists" and not v and plan.get("features_default") else v
        out.print(f"{k + ':':<{width + 1}} {shown}", highlight=False, markup=False)


def tune_plan(opts: dict[str, Any]) -> None:
    """`tune --dry-run` (`opts`: the command's options): the trials' base config, the space and the
    search settings a search would start with; creates nothing."""
    from emi_ray.config import Config, load_config
    from emi_ray.engine.rundir import new_run_dir
    from emi_ray.tune.settings import SearchRequest, SearchSettings, find_search
    from emi_ray.tune.spaces import load_space

    if opts["resume"]:  # the stored settings apply
        run_dir = find_search(opts["space"], opts["out_dir"])
        settings = SearchSettings.load(run_dir)
        space = load_space(run_dir / "space.yaml")
        where = {"features": settings.features, "features_exists": True, "features_default": False}
    else:
        space = load_space(opts["space"] or "fusion")
        where = planned_features(opts["features"], media=bool(space.stage1_keys()))
        base = load_config(opts["config"]) if opts["config"] else None
        request = SearchRequest(space=opts["space"] or "fusion", features=where["features"], trials=opts["trials"],
                                concurrency=opts["concurrency"], max_epochs=opts["max_epochs"],
                                cpus_per_trial=opts["cpus_per_trial"], gpus_per_trial=opts["gpus_per_trial"],
                                seed=opts["seed"], confirm_seeds=opts["confirm_seeds"], base=base,
                                overrides=list(opts["sets"] or []), **({"sampler": str(opts["sampler"])}
                                                                       if opts.get("sampler") else {}))
        settings = SearchSettings.new(request, space, where["features"])
        run_dir = Path(opts["out_dir"]).expanduser().resolve() if opts["out_dir"] else new_run_dir(f"tune-{space.name}")
    print_plan("tune", Config.from_dict(settings.base).to_dict(), {
        **where, "run_dir": str(run_dir), "resume": bool(opts["resume"]), "space": settings.space,
        "space_source": settings.space_source,
        "params": space.described() if opts["as_json"] else space.keys_line(),
        "trials": settings.trials, "concurrency": settings.concurrency,
        "max_epochs": settings.max_epochs, "scheduler": settings.scheduler, "sampler": settings.sampler,
        "seed": settings.seed, "confirm_seeds": settings.confirm_seeds, "cpus_per_trial": settings.cpus_per_trial,
        "gpus_per_trial": settings.gpus_per_trial, "address": opts["address"],
        "storage": opts["storage"] if not opts["resume"] else settings.storage}, opts["as_json"])
