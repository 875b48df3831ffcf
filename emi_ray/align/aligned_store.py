"""Stage-I results used by stage II: aligned feature stores and cached stage-I runs.

`stage2_features(cfg, features)` is what every stage-II entry point (train, Tune trials,
predict, evaluate) calls on its feature store: with `stage1.run` set it returns the store
mapped through that run's heads, made once per (run, store) under RUN/aligned/<key>/ and
reused after; without, the store itself. The config keeps the raw store in
`data.features`, so a run's predictions map test features through the same heads.

The aligned store holds the heads' outputs on the store's raw features after the run's own
input normalisation (apply.py; statistics of the stage-I corpus' training items, saved in
the run), so stage II sees what the heads saw in training.

`pretrained_run(cfg, features, root)` is a stage-I search trial's pretraining: the run
for this stage1 config (and data.normalize, which also sets stage I's input
normalisation, corpus, seed, and the store's encoders) lives in
root/<key>/, trained in-process on first use and reused when a later trial repeats the
config. Both use a file lock, so concurrent trials build each result once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from emi_ray.align.apply import STORE_TO_HEAD, apply_heads, load_heads
from emi_ray.align.backbones import semantic_options
from emi_ray.align.features import Encoders
from emi_ray.align.trainer import default_corpus, default_corpus_dir, run_pretrain
from emi_ray.config import Config
from emi_ray.data.store import MANIFEST, FeatureStore
from emi_ray.errors import ConfigError, StoreError
from emi_ray.io import atomic_write_text, locked, resolved

DONE = "COMPLETE"
TRAINING_SPLITS = ("train", "valid")
STAGE1_KEYS_OF_RESULT = ("temperature", "learnable_temperature", "weighted", "lr_max", "lr_min", "restart_epochs",
                         "epochs", "batch_size", "train_blocks", "dim", "direction", "granularity")
STAGE1_ENCODERS = {"video": ("lite-video", "clip"), "audio": ("lite-audio", "wav2vec2"), "text": ("hash", "bert")}


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _store_key(features: Path) -> str:
    return _digest([str(features.resolve()), (features / MANIFEST).read_text()])


def _build_once(out: Path, build: Callable[[Path], None]) -> Path:
    """`out` built by `build(out)` unless a finished one is there (a partial one is redone)."""
    with locked(out.with_name(out.name + ".lock")):
        if not (out / DONE).exists():
            shutil.rmtree(out, ignore_errors=True)
            build(out)
            (out / DONE).write_text("ok\n")
    return out


def aligned_store(features: str | Path, run: str | Path, splits: tuple[str, ...] = TRAINING_SPLITS) -> Path:
    """`features`' `splits` mapped through stage-I run `run`'s heads (made once, kept in RUN/aligned/)."""
    features, run = Path(features), Path(run)
    key = f"{_store_key(features)}-{'-'.join(splits)}"
    return _build_once(run / "aligned" / key, lambda out: apply_heads(features, run, out, list(splits)))


def stage2_features(cfg: Config, features: str | Path, splits: tuple[str, ...] = TRAINING_SPLITS) -> str | Path:
    """The store stage II reads: `features`, or its aligned twin when `stage1.run` is set.

    Training and search map the train and valid splits only (a search never opens test);
    predicting maps the split it predicts. Without a run a URI stays a URI (a store on S3)."""
    return aligned_store(features, cfg.stage1.run, splits) if cfg.stage1.run else resolved(features)


def store_encoders(features: str | Path, models: str | Path | None = None):
    """The stage-I `Encoders` matching how `features` was extracted (its manifest's encoder names)."""
    mods = FeatureStore(features).manifest["modalities"]
    names = {m: str(mods[m]["encoder"]).split("+")[-1] for m in ("video", "audio", "text") if m in mods}
    usable = {m: n for m, n in names.items() if n in STAGE1_ENCODERS[m]}
    if "text" not in usable or not ({"video", "audio"} & set(usable)):
        raise ConfigError(
            f"{features}: stage-I trials need features extracted from media by encoders stage I can align "
            f"(video {'/'.join(STAGE1_ENCODERS['video'])}, audio {'/'.join(STAGE1_ENCODERS['audio'])}, text "
            f"{'/'.join(STAGE1_ENCODERS['text'])}); this store has {names}. Extract with e.g. "
            f"`emi-ray extract DATA --preset lite --out FEATURES` and pass --features FEATURES")
    chosen = Encoders.choose(usable.get("video", "lite"), usable.get("audio", "lite"), usable["text"], models)
    return chosen, [m for m in ("video", "audio") if m in usable]


def stage1_result_key(cfg: Config, features: str | Path) -> str:
    """Identifies a stage-I result: the stage1 settings, data.normalize, seed, corpus and the store's encoders."""
    return _result_key(cfg, *store_encoders(features, cfg.stage1.models))


def _result_key(cfg: Config, encoders, mods: list[str]) -> str:
    s1 = {k: getattr(cfg.stage1, k) for k in STAGE1_KEYS_OF_RESULT}
    corpus = str(Path(cfg.stage1.corpus).resolve()) if cfg.stage1.corpus else str(default_corpus_dir())
    key = [s1, cfg.train.seed, corpus, encoders.key(), mods]
    if not cfg.stage1.train_blocks:  # frozen features: the heads' inputs are normalised per data.normalize
        key.append({"input_normalization": cfg.data.normalize})
    return _digest(key)


def pretrained_run(cfg: Config, features: str | Path, root: str | Path,
                   notify: Callable[[str], None] | None = None) -> Path:
    """The stage-I run of this trial's stage1 config under `root` (pretrained in-process once)."""
    if cfg.stage1.train_blocks:
        raise ConfigError(
            f"stage1.train_blocks={cfg.stage1.train_blocks} in a search: a run that fine-tunes backbone blocks "
            "needs the media re-extracted through its encoders, which a trial cannot do; search with "
            "stage1.train_blocks=0, or pretrain with `emi-ray pretrain --set stage1.train_blocks=N` and train on "
            "`emi-ray extract DATA --aligned RUN --out OUT`")
    encoders, mods = store_encoders(features, cfg.stage1.models)
    modality = {("video",): "vision", ("audio",): "audio"}.get(tuple(mods), "both")
    run_cfg = Config.from_dict(cfg.to_dict())
    run_cfg.train.workers = 0

    def build(out: Path) -> None:
        corpus = Path(cfg.stage1.corpus) if cfg.stage1.corpus else default_corpus(notify)
        run_pretrain(run_cfg, corpus, modality, encoders, out, notify=notify, in_process=True)

    return _build_once(Path(root) / _result_key(cfg, encoders, mods), build)


TUNED = "tuned"  # the raw store's manifest key: extracted through a run's fine-tuned tails


def refuse_unaligned(out: Path) -> None:
    """StoreError unless `out` has no store or holds an aligned one (an unaligned store's features
    would be replaced by mapped ones)."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return
    try:
        record = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError(f"{manifest}: not a readable store manifest; choose a new --out") from None
    if not isinstance(record, dict) or "aligned" not in record:
        raise StoreError(f"{out}: holds an unaligned feature store; extract with --aligned into a new --out")


def extract_aligned(raw: str | Path, run: str | Path, out: str | Path) -> dict:
    """`emi-ray extract --aligned RUN`: (re)write the store `out` = the raw store `raw` mapped by
    RUN's heads. Re-runs (a resumed extraction) rebuild `out` from `raw`; a store at `out`
    that is not an aligned one is never overwritten. For a run with fine-tuned blocks, `raw`
    was extracted through them (see tuned_plan) and its manifest says so."""

    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        refuse_unaligned(out)
        manifest.unlink()  # derived data: rebuilt below from the raw store
        shutil.rmtree(out / "shards", ignore_errors=True)
    _, st = load_heads(run)
    if st.get("tails"):
        raw_manifest = Path(raw) / MANIFEST
        m = json.loads(raw_manifest.read_text())
        m[TUNED] = {"run": str(Path(run).resolve()), "train_blocks": st["train_blocks"],
                    "tails": st["tails"], "digest": st["tails_digest"]}
        atomic_write_text(raw_manifest, json.dumps(m, indent=2))
    return apply_heads(raw, run, out)


def tuned_plan(run: str | Path, plan: Any, out: str | Path) -> tuple[Any, Path]:
    """(the extraction plan, where its raw features go) for `extract --aligned RUN --out OUT`.

    A frozen-encoder run: the plan as is, into OUT/unaligned. A run with fine-tuned blocks
    (stage1.train_blocks > 0): each encoder the run fine-tuned loads its tail (`tail=`
    option), and the features go to OUT/tuned-<digest of the tails>, so features of
    other weights never mix into them."""
    _, st = load_heads(run)
    if not st.get("tails"):
        return plan, Path(out) / "unaligned"
    changes = {}
    for slot, choice in plan.choices().items():
        head = STORE_TO_HEAD.get(slot)
        rel = st["tails"].get(head)
        if rel is None or st["encoders"].get(head) != choice.name:
            continue
        tail = Path(run) / rel
        want = torch.load(tail, map_location="cpu", weights_only=True)["options"]
        have = semantic_options(choice.name, choice.options)
        if have != want:
            raise StoreError(f"{run}: its {choice.name} blocks were fine-tuned with options {want}, but this "
                             f"extraction sets {have}; use the run's options in --models")
        changes[slot] = replace(choice, options={**choice.options, "tail": str(tail.resolve())})
    return replace(plan, **changes), Path(out) / f"tuned-{st['tails_digest'][:10]}"


def check_run(run: str | Path, encoders: dict[str, str | None], media: bool = True) -> None:
    """Fail before extracting when RUN is not a stage-I run or shares no encoder with the plan
    (or, `media=False`: the organiser import, RUN fine-tuned its encoders)."""
    _, st = load_heads(run)
    if not any(st["encoders"].get(STORE_TO_HEAD[m]) == name for m, name in encoders.items() if name):
        raise StoreError(f"{run}: its heads were trained on {st['encoders']}, but this extraction uses {encoders}; "
                         f"extract with the run's encoders (--video-encoder/--audio-encoder/--text-encoder)")
    if st.get("tails") and not media:
        raise StoreError(f"{run}: fine-tuned its encoders' last {st['train_blocks']} blocks "
                         f"(stage1.train_blocks={st['train_blocks']}): its features come from media extracted "
                         f"through them (--preset paper with the run's encoders), not from the organiser import")
