"""`emi-ray pretrain`: stage I under a Ray Train TorchTrainer, writing a run directory.

Run directory (RUN):
  config.yaml    the resolved config
  stage1.json    corpus, modalities, encoders (names + options), feature files, dim
  metrics.json   best epoch: recall@1/@5 per modality (+ chance), expression accuracy; "weights":
                 the confidence weights trained with (weight_stats)
  history.csv    one row per epoch (loss, recall, lr, temperature, timings)
  heads.pt       best heads: {"heads", "in_dims", "dim", "encoders", "modalities", "train_blocks",
                 "tails", "tails_digest", "input_normalization", "direction", "granularity",
                 "windows"} (torch.load(weights_only=True)); granularity/windows: align/granularity.py
                 (older runs lack them: clip means, applied per frame; direction: symmetric);
                 "input_normalization": the heads' input statistics (Normalization.to_state(),
                 keyed vision/audio/text, of the corpus' training items; align/input_stats.py),
                 None with train_blocks > 0 or data.normalize=none; absent in older runs
  tails/         with stage1.train_blocks = N > 0: <vision|audio|text>.pt, the best epoch's
                 fine-tuned last N blocks of each backbone {"encoder", "blocks", "options",
                 "state"} (named as in the encoder's model: its `tail=FILE` option loads them)
  checkpoints/   local mode (workers=0) checkpoints; ray/ with workers (resume either way)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from emi_ray.align.backbones import Tail, check_backbone, semantic_options
from emi_ray.align.corpus import load_corpus
from emi_ray.align.features import Encoders, cache_path, corpus_features, tail_features
from emi_ray.align.input_stats import STATE_KEY
from emi_ray.align.loop import pretrain
from emi_ray.align.synth import write_affect_corpus
from emi_ray.config import Config, dump_config
from emi_ray.engine.checkpoints import latest_checkpoint, load_state
from emi_ray.engine.outputs import write_history, write_metrics
from emi_ray.engine.progress import OnEpoch
from emi_ray.engine.provenance import write_provenance
from emi_ray.engine.rundir import check_run_dir, new_run_dir, run_lock
from emi_ray.engine.torch_run import run_on_worker, run_torch_trainer
from emi_ray.errors import EmiError
from emi_ray.io import atomic_path, atomic_write_text, home, locked

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
    root = default_corpus_dir()
    with locked(root.with_name("affect.lock")):
        if not (root / "COMPLETE").exists():
            if notify:
                notify(f"no --affect given: creating the built-in synthetic affect corpus at {root} (one time)")
            write_affect_corpus(root, n=n, seed=0)
            (root / "COMPLETE").write_text("ok\n")
    return root


def _load_data(files: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for m, f in files.items():
        with np.load(f) as z:
            out[m] = {k: z[k] for k in z.files}
    return out


def build_tails(encoders: Encoders, mods: list[str], blocks: int) -> dict[str, Any] | None:
    """The trainable tails (last `blocks` blocks) of each modality's backbone and the text one."""
    if not blocks:
        return None
    return {m: Tail(encoders.create(m), blocks) for m in [*mods, "text"]}


def worker_loop(payload: dict[str, Any]) -> None:
    cfg = Config.from_dict(payload["cfg"])
    data = _load_data(payload["files"])
    tails = build_tails(Encoders(**payload["encoders"]), list(data), cfg.stage1.train_blocks)
    run_on_worker(payload, lambda resume_from, root, report: pretrain(
        cfg, data, report, resume_from=resume_from, checkpoint_root=root, dim=payload["dim"], tails=tails))


def weight_stats(files: dict[str, str], weighted: bool) -> dict[str, Any]:
    """The confidence weights w_i of the training items per modality (n, min / median / max, the
    share with w = 1), whether the run uses them, and `noop`: weighted, yet every w_i is 1."""
    out: dict[str, Any] = {"weighted": weighted}
    for m, f in files.items():
        with np.load(f) as z:  # reads only these two arrays of the cache
            w = np.asarray(z["weight"], np.float64)[~z["valid"]]
        out[m] = {"n": int(len(w)), "min": float(w.min()), "median": float(np.median(w)), "max": float(w.max()),
                  "share_1": float(np.mean(w >= 1.0 - 1e-6))}
    out["noop"] = bool(weighted and all(out[m]["share_1"] == 1.0 for m in files))
    return out


@dataclass
class _Plan:
    """What a pretraining run reads: the corpus, its modalities and encoders, the cached feature files."""

    corpus_dir: Path
    modality: str
    mods: list[str]
    encoders: Encoders
    dim: int
    files: dict[str, str]


def _plan(cfg: Config, corpus_dir: str | Path | None, modality: str, encoders: Encoders | None,
          run_dir: Path, resume: bool, notify: Callable[[str], None] | None, dim: int | None) -> _Plan:
    """Check the request (one clear line, before any work) and encode the corpus once (cached)."""
    if modality not in ("vision", "audio", "both"):
        raise EmiError(f"--modality {modality!r}: choose vision, audio or both")
    check_run_dir(run_dir, resume, marker=INFO)
    info = json.loads((run_dir / INFO).read_text()) if resume else {}
    if resume:  # the run's own corpus, modalities and encoders
        corpus_dir, modality, dim = info["corpus"], info["modality"], info["dim"]
        encoders = Encoders(**info["encoders"])
        # ... and its own loss and granularity (a run from before they were recorded: symmetric, clip means)
        cfg.stage1.direction = info.get("direction", "symmetric")
        cfg.stage1.granularity = info.get("granularity", "clip")
    corpus_dir = Path(corpus_dir) if corpus_dir else default_corpus(notify)
    encoders = encoders or Encoders()
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
    if blocks and cfg.stage1.granularity == "frame":
        raise EmiError(f"stage1.granularity=frame trains the heads on frozen frames; with stage1.train_blocks="
                       f"{blocks} use stage1.granularity=clip")
    for m in [*mods, "text"] if blocks else []:
        check_backbone(getattr(encoders, m), blocks)  # lite encoders: one clear line, before any work
    files = {}
    for m in mods:  # writes the cache once
        if blocks:
            tail_features(corpus, m, encoders, blocks, progress=notify)
        else:
            corpus_features(corpus, m, encoders, progress=notify)
        files[m] = str(cache_path(corpus, m, encoders, blocks=blocks).resolve())
    return _Plan(Path(corpus_dir), modality, mods, encoders, dim or cfg.stage1.dim, files)


def run_pretrain(cfg: Config, corpus_dir: str | Path | None = None, modality: str = "both",
                 encoders: Encoders | None = None, run_dir: Path | None = None, resume: bool = False,
                 notify: Callable[[str], None] | None = None, dim: int | None = None,
                 max_failures: int = 1, in_process: bool = False, on_epoch: OnEpoch | None = None) -> PretrainResult:
    """Encode the corpus once (cached), train the heads under TorchTrainer, write RUN;
    `on_epoch(metrics)` as each epoch ends.

    `in_process=True` runs the same loop in this process without Ray Train (what a Tune
    trial of the stage1 search space does: it already runs inside a Ray actor)."""
    run_dir = Path(run_dir) if run_dir else new_run_dir("pretrain")
    plan = _plan(cfg, corpus_dir, modality, encoders, run_dir, resume, notify, dim)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):  # a second resume of this run gets one line naming this one
        dump_config(cfg, run_dir / "config.yaml")
        atomic_write_text(run_dir / INFO, json.dumps(
            {"corpus": str(plan.corpus_dir.resolve()), "modality": plan.modality, "modalities": plan.mods,
             "encoders": asdict(plan.encoders), "files": plan.files, "dim": plan.dim,
             "train_blocks": cfg.stage1.train_blocks, "direction": cfg.stage1.direction,
             "granularity": cfg.stage1.granularity}, indent=2))
        write_provenance(run_dir, "pretrain", resume=resume, corpus=str(plan.corpus_dir.resolve()))
        if notify:
            notify(f"run directory: {run_dir}")
        weights = weight_stats(plan.files, cfg.stage1.weighted)
        collect = lambda d: write_outputs(run_dir, d, plan.encoders, plan.mods, weights)  # noqa: E731
        if in_process:
            root = run_dir / "checkpoints"
            pretrain(cfg, _load_data(plan.files), lambda _m, _c: None, resume_from=latest_checkpoint(root),
                     checkpoint_root=root, dim=plan.dim, tails=build_tails(plan.encoders, plan.mods,
                                                                          cfg.stage1.train_blocks))
            return collect(latest_checkpoint(root))
        payload = {"cfg": cfg.to_dict(), "files": plan.files, "dim": plan.dim, "encoders": asdict(plan.encoders)}
        return run_torch_trainer(worker_loop, payload, run_dir, name=RAY_NAME, workers=cfg.train.workers,
                                 max_failures=max_failures, collect=collect, on_epoch=on_epoch)


def _write_tails(run_dir: Path, st: dict[str, Any], encoders: Encoders, blocks: int) -> tuple[dict[str, str], str | None]:
    """The best epoch's fine-tuned blocks as RUN/tails/<modality>.pt; their names and joint digest."""
    tails, digest = {}, hashlib.sha1()
    for m, state in (st.get("best_tails") or {}).items():
        name = getattr(encoders, m)
        rel = f"{TAILS}/{m}.pt"
        (run_dir / TAILS).mkdir(exist_ok=True)
        with atomic_path(run_dir / rel) as tmp:
            torch.save({"encoder": name, "blocks": blocks, "state": state,
                        "options": semantic_options(name, encoders.options.get(name, {}))}, tmp)
        digest.update((run_dir / rel).read_bytes())
        tails[m] = rel
    return tails, digest.hexdigest()[:16] if tails else None


def write_outputs(run_dir: Path, ckpt_dir: Path, encoders: Encoders, mods: list[str],
                  weights: dict[str, Any] | None = None) -> PretrainResult:
    st = load_state(ckpt_dir)
    s1 = st["config"]["stage1"]
    blocks = int(s1["train_blocks"])
    tails, digest = _write_tails(run_dir, st, encoders, blocks)
    with atomic_path(run_dir / HEADS) as tmp:
        torch.save({"heads": st["best_heads"], "in_dims": st["in_dims"], "dim": st["dim"],
                    "encoders": {"vision": encoders.vision, "audio": encoders.audio, "text": encoders.text},
                    "modalities": mods, "config": st["config"], "train_blocks": blocks, "tails": tails,
                    "tails_digest": digest, STATE_KEY: st.get(STATE_KEY), "direction": s1.get("direction", "symmetric"),
                    "granularity": st.get("granularity", "clip"), "windows": st.get("windows") or {}}, tmp)
    metrics = {**st["best"], "epochs_run": len(st["history"]), **({"weights": weights} if weights else {})}
    write_metrics(run_dir, metrics)
    write_history(run_dir, st["history"])
    return PretrainResult(run_dir, metrics, st["history"])
