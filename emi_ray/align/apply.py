"""Use in stage II: apply a stage-I run's trained heads to a feature store.

`apply_heads(store_in, run, store_out)` maps every stored frame (video, audio: (T, D) ->
(T, dim)) and text vector through the matching head, L2-normalises it and scales it by
sqrt(dim) (unit-ish per coordinate, like raw features), and writes a new store. Before
the head, each raw frame / vector gets the run's input normalisation (heads.pt
["input_normalization"]: the per-dimension statistics of the corpus' training items the
heads trained on, input_stats.py), exactly as in training; a run without it (tails,
data.normalize=none, or saved before runs kept it) maps raw features. A head trained on clip
means (stage1.granularity=clip) sees each frame as the mean over a centred window of the
training clips' length (heads.pt["windows"]), one trained on frames sees the frame itself
(granularity.py), so its inputs at application are distributed as in training. Only
modalities whose store encoder is the run's encoder for that modality are mapped (the
head was trained on that encoder's space); others are copied unchanged. The new
manifest records the run: manifest["aligned"] = {"run", "modalities", "encoders",
"splits", "train_blocks", "input_normalization" (its mode or None), "granularity",
"windows" (per mapped head; {} for a run saved before granularity was recorded)}. A run that
fine-tuned backbone blocks (train_blocks > 0) maps only a store extracted through its fine-tuned encoders (`extract --aligned RUN`, whose
raw store's manifest["tuned"] names the run's tails); any other store fails with one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from emi_ray.align.granularity import applied_inputs, from_heads
from emi_ray.align.input_stats import STATE_KEY, from_state
from emi_ray.align.trainer import HEADS
from emi_ray.data.store import MANIFEST, SEQUENCE_MODALITIES, FeatureStore
from emi_ray.data.store_writer import Row, StoreWriter
from emi_ray.errors import StoreError
from emi_ray.io import atomic_write_text
from emi_ray.models.align_heads import AlignHeads

STORE_TO_HEAD = {"video": "vision", "audio": "audio", "text": "text"}


def load_heads(run: str | Path):
    path = Path(run) / HEADS
    if not path.is_file():
        raise StoreError(f"{run}: not a finished stage-I run (no {HEADS}); run `emi-ray pretrain` first")
    st = torch.load(path, map_location="cpu", weights_only=True)
    heads = AlignHeads(st["in_dims"], st["dim"])
    heads.load_state_dict({k: v for k, v in st["heads"].items() if k != "log_scale"}, strict=False)
    return heads.eval(), st


def input_normalization(st: dict):
    """The input statistics saved in a run's heads.pt state (`load_heads`), or None."""
    return from_state(st.get(STATE_KEY))


def embed_features(heads, norm, head: str, x: np.ndarray, window: int = 1) -> np.ndarray:
    """Raw store features (D,) or (T, D) of `head`'s encoder -> (dim,) / (T, dim) aligned ones:
    the mean over `window` frames (clip-trained heads), the run's input normalisation `norm`
    (or none), the head, L2-normalised, times sqrt(dim)."""
    x = applied_inputs(x, norm, head, window)
    with torch.no_grad():
        y = heads.embed(head, torch.from_numpy(np.ascontiguousarray(np.atleast_2d(x)))).numpy()
    y = y * math.sqrt(heads.dim)
    return y if x.ndim == 2 else y[0]


def check_tuned(manifest: dict, store: str | Path, run: str | Path, st: dict) -> None:
    """One clear line when `store` cannot be mapped by `run`: already aligned, or the run
    fine-tuned its encoders and the store was not extracted through them."""
    done = manifest.get("aligned")
    if done:
        raise StoreError(f"{store}: already mapped by the heads of stage-I run {done['run']}; "
                         f"train on it without stage1.run")
    n = int(st.get("train_blocks", 0))
    if n and (manifest.get("tuned") or {}).get("digest") != st.get("tails_digest"):
        raise StoreError(f"{store}: stage-I run {run} fine-tuned its encoders' last {n} blocks "
                         f"(stage1.train_blocks={n}), and these features come from other encoder weights; "
                         f"re-extract them through the fine-tuned encoders: "
                         f"`emi-ray extract DATA --aligned {run} --out OUT`, then train on OUT")


def apply_heads(store_in: str | Path, run: str | Path, store_out: str | Path,
                splits: list[str] | None = None) -> dict:
    """Write `store_out` = `store_in` with the run's heads applied; returns the 'aligned' record.

    `splits` limits it to those splits (a search maps train + valid and never opens test)."""
    src = FeatureStore(store_in)
    heads, st = load_heads(run)
    check_tuned(src.manifest, store_in, run, st)
    norm = input_normalization(st)
    granularity, windows = from_heads(st)
    mods = src.modalities
    mapped, entries = [], {}
    for m in mods:
        entry = dict(src.manifest["modalities"][m])
        head = STORE_TO_HEAD[m]
        want = st["encoders"].get(head)
        have = str(entry.get("encoder", "")).split("+")[-1]
        if head in st["in_dims"] and have == want:
            if int(entry["dim"]) != st["in_dims"][head]:
                raise StoreError(f"{store_in}: {m} has dim {entry['dim']} but the {head} head of {run} takes "
                                 f"{st['in_dims'][head]} ({want})")
            entry.update(encoder=f"{entry['encoder']}+align", dim=int(st["dim"]))
            mapped.append(m)
        entries[m] = entry
    if not mapped:
        raise StoreError(
            f"{store_in}: no modality was extracted with the encoders of {run} "
            f"(store: { {m: src.manifest['modalities'][m].get('encoder') for m in mods} }, "
            f"run: {st['encoders']}); extract with the same --video-encoder/--audio-encoder/--text-encoder")
    out = Path(store_out)
    if (out / MANIFEST).exists():
        raise StoreError(f"{out}: a feature store already exists there; choose a new output directory")
    record = {"run": str(Path(run).resolve()), "modalities": mapped, "encoders": st["encoders"],
              "splits": splits or "all", "train_blocks": int(st.get("train_blocks", 0)),
              "input_normalization": norm.mode if norm is not None else None, "granularity": granularity,
              "windows": {STORE_TO_HEAD[m]: windows[STORE_TO_HEAD[m]] for m in mapped if STORE_TO_HEAD[m] in windows}}
    writer = StoreWriter(out, entries, command=f"apply_heads({store_in}, {run})",
                         source=str(Path(store_in).resolve()))
    cols = ["id", "split", "labels", *[c for m in mods for c in ([m, f"{m}_len"] if m in SEQUENCE_MODALITIES else [m])]]
    dims = src.dims()
    for table in src.iter_tables(cols, splits):
        for r in table.to_pylist():
            feats = {}
            for m in mods:
                if r[m] is None:
                    continue
                x = np.asarray(r[m], np.float32)
                x = x.reshape(-1, dims[m]) if m in SEQUENCE_MODALITIES else x
                head = STORE_TO_HEAD[m]
                feats[m] = embed_features(heads, norm, head, x, windows.get(head, 1)) if m in mapped else x
            labels = None if r["labels"] is None else np.asarray(r["labels"], np.float32)
            writer.add(Row(r["id"], r["split"], labels, feats))
    writer.close()
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["aligned"] = record
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    for extra in ("errors.csv",):
        if (Path(store_in) / extra).exists():
            atomic_write_text(out / extra, (Path(store_in) / extra).read_text())
    return record
