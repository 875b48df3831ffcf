"""`emi-ray pretrain`: stage I under a Ray Train TorchTrainer, writing a run directory.

Run directory (RUN):
  config.yaml    the resolved config
  stage1.json    corpus, modalities, encoders (names + options), feature files, dim
  metrics.json   best epoch: recall@1/@5 per modality (+ chance), expression accuracy
  history.csv    one row per epoch (loss, recall, lr, temperature, timings)
  heads.pt       best heads: {"heads", "in_dims", "dim", "encoders", "modalities", "train_blocks",
                 "tails", "tails_digest", "input_normalization"} (torch.load(weights_only=True));
                 "input_normalization": the heads' input statistics (Normalization.to_state(),
                 keyed vision/audio/text, of the corpus' training items; align/input_stats.py),
                 None with train_blocks > 0 or data.normalize=none; absent in older runs
  tails/         with stage1.train_blocks = N > 0: <vision|audio|text>.pt, the best epoch's
                 fine-tuned last N blocks of each backbone {"encoder", "blocks", "options",
                 "state"} (named as in the encoder's model: its `tail=FILE` option loads them)
  checkpoints/   local mode (workers=0) checkpoints; ray/ with workers (resume either way)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from emi_ray.align.features import Encoders
from emi_ray.config import Config, dump_config
from emi_ray.errors import EmiError
from emi_ray.io import atomic_write_text, home

RAY_NAME = "pretrain"
HEADS = "heads.pt"
INFO = "stage1.json"
TAILS = "tails"


@dataclass
class PretrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


def default_corpus_dir() -> Path:
    return home() / "synthetic" / "affect"


def default_corpus(notify: Callable[[str], None] | None = None, n: int = 600) -> Path:
    """The built-in synthetic affect corpus under EMI_RAY_HOME (made on first use, once)."""
    from emi_ray.io import locked
    from emi_ray.align.synth import write_affect_corpus

    root = default_corpus_dir()
    with locked(root.with_name("affect.lock")):
        if not (root / "COMPLETE").exists():
            if notify:
                notify(f"no --affect given: creating the built-in synthetic affect corpus at {root} (one time)")
            write_affect_corpus(root, n=n, seed=0)
            (root / "COMPLETE").write_text("ok\n")
    return root


def _load_data(files: dict[str, str]):
    import numpy as np

    out = {}
    for m, f in files.items():
        with np.load(f) as z:
            out[m] = {k: z[k] for k in z.files}
    return out


def build_tails(encoders: Encoders, mods: list[str], blocks: int) -> dict[str, Any] | None:
    """The trainable tails (last `blocks` blocks) of each modality's backbone and the text one."""
    if not blocks:
        return None
    from emi_ray.align.backbones import Tail

    return {m: Tail(encoders.create(m), blocks) for m in [*mods, "text"]}


def worker_loop(config: dict[str, Any]) -> None:
    import logging

    import ray.train

    from emi_ray.align.loop import pretrain
    from emi_ray.train.loop import latest_checkpoint

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = Config.from_dict(config["cfg"])
    data = _load_data(config["files"])
    tails = build_tails(Encoders(**config["encoders"]), list(data), cfg.stage1.train_blocks)

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    local_root = config.get("local_checkpoints")
    if local_root:
        pretrain(cfg, data, report, resume_from=latest_checkpoint(local_root), checkpoint_root=local_root,
                 dim=config["dim"], tails=tails)
        return
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        pretrain(cfg, data, report, dim=config["dim"], tails=tails)
        return
    with ckpt.as_directory() as d:
        pretrain(cfg, data, report, resume_from=d, dim=config["dim"], tails=tails)


def run_pretrain(cfg: Config, corpus_dir: str | Path | None = None, modality: str = "both",
                 encoders: Encoders | None = None, run_dir: Path | None = None, resume: bool = False,
                 notify: Callable[[str], None] | None = None, dim: int | None = None,
                 max_failures: int = 1, in_process: bool = False) -> PretrainResult:
    """Encode the corpus once (cached), train the heads under TorchTrainer, write RUN.

    `in_process=True` runs the same loop in this process without Ray Train (what a Tune
    trial of the stage1 search space does: it already runs inside a Ray actor)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from emi_ray.align.corpus import load_corpus
    from emi_ray.align.backbones import check_backbone
    from emi_ray.align.features import cache_path, corpus_features, tail_features
    from emi_ray.train.trainer import new_run_dir

    if modality not in ("vision", "audio", "both"):
        raise EmiError(f"--modality {modality!r}: choose vision, audio or both")
    run_dir = Path(run_dir) if run_dir else new_run_dir("pretrain")
    if (run_dir / "config.yaml").exists() and not resume:
        raise EmiError(f"{run_dir}: run directory exists; pass --resume to continue it or choose a new --out")
    if resume and not (run_dir / INFO).exists():
        raise EmiError(f"{run_dir}: nothing to resume (no {INFO})")
    if resume:  # the run's own corpus, modalities and encoders
        info = json.loads((run_dir / INFO).read_text())
        corpus_dir, modality, dim = info["corpus"], info["modality"], info["dim"]
        encoders = Encoders(**info["encoders"])
    corpus_dir = Path(corpus_dir) if corpus_dir else default_corpus(notify)
    encoders = encoders or Encoders()
    dim = dim or cfg.stage1.dim
    corpus = load_corpus(corpus_dir)
    mods = corpus.modalities if modality == "both" else [modality]
    if not mods or any(m not in corpus.modalities for m in mods):
        raise EmiError(f"{corpus_dir}: the corpus has no {modality} rows (has: {corpus.modalities})")
    blocks = cfg.stage1.train_blocks
    if resume and info.get("train_blocks", 0) != blocks:
        raise EmiError(f"{run_dir}: was trained with stage1.train_blocks={info.get('train_blocks', 0)}; "
                       f"resume it with the same value (not {blocks})")
    if blocks < 0:
        raise EmiError(f"stage1.train_blocks={blocks}: must be >= 0 (0: projection heads only)")
    for m in [*mods, "text"] if blocks else []:
        check_backbone(getattr(encoders, m), blocks)  # lite encoders: one clear line, before any work
    files = {}
    for m in mods:  # writes the cache once
        if blocks:
            tail_features(corpus, m, encoders, blocks, progress=notify)
        else:
            corpus_features(corpus, m, encoders, progress=notify)
        files[m] = str(cache_path(corpus, m, encoders, blocks=blocks).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    atomic_write_text(run_dir / INFO, json.dumps(
        {"corpus": str(Path(corpus_dir).resolve()), "modality": modality, "modalities": mods,
         "encoders": asdict(encoders), "files": files, "dim": dim, "train_blocks": blocks}, indent=2))
    if notify:
        notify(f"run directory: {run_dir}")
    if in_process:
        from emi_ray.align.loop import pretrain
        from emi_ray.train.loop import latest_checkpoint

        root = run_dir / "checkpoints"
        pretrain(cfg, _load_data(files), lambda _m, _c: None, resume_from=latest_checkpoint(root),
                 checkpoint_root=root, dim=dim, tails=build_tails(encoders, mods, blocks))
        return write_outputs(run_dir, latest_checkpoint(root), encoders, mods)
    workers = cfg.train.workers
    if workers > 0 and not ray.is_initialized():
        from emi_ray.ray_env import init_ray

        init_ray()
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "files": files, "dim": dim, "encoders": asdict(encoders),
                           "local_checkpoints": None if workers else str(run_dir / "checkpoints")},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str((run_dir / "ray").resolve()), name=RAY_NAME,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise EmiError(f"{run_dir}: pretraining produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        return write_outputs(run_dir, Path(d), encoders, mods)


def write_outputs(run_dir: Path, ckpt_dir: Path, encoders: Encoders, mods: list[str]) -> PretrainResult:
    import hashlib

    import torch

    from emi_ray.align.backbones import semantic_options
    from emi_ray.align.input_stats import STATE_KEY
    from emi_ray.io import atomic_path
    from emi_ray.train.loop import STATE_FILE

    st = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=True)
    blocks = int(st["config"]["stage1"]["train_blocks"])
    tails, digest = {}, hashlib.sha1()
    for m, state in (st.get("best_tails") or {}).items():  # fine-tuned blocks: RUN/tails/<modality>.pt
        name = getattr(encoders, m)
        rel = f"{TAILS}/{m}.pt"
        (run_dir / TAILS).mkdir(exist_ok=True)
        with atomic_path(run_dir / rel) as tmp:
            torch.save({"encoder": name, "blocks": blocks, "state": state,
                        "options": semantic_options(name, encoders.options.get(name, {}))}, tmp)
        digest.update((run_dir / rel).read_bytes())
        tails[m] = rel
    with atomic_path(run_dir / HEADS) as tmp:
        torch.save({"heads": st["best_heads"], "in_dims": st["in_dims"], "dim": st["dim"],
                    "encoders": {"vision": encoders.vision, "audio": encoders.audio, "text": encoders.text},
                    "modalities": mods, "config": st["config"], "train_blocks": blocks, "tails": tails,
                    "tails_digest": digest.hexdigest()[:16] if tails else None,
                    STATE_KEY: st.get(STATE_KEY)}, tmp)
    metrics = {**st["best"], "epochs_run": len(st["history"])}
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(st["history"][-1]))
    w.writeheader()
    w.writerows(st["history"])
    atomic_write_text(run_dir / "history.csv", buf.getvalue())
    return PretrainResult(run_dir, metrics, st["history"])
