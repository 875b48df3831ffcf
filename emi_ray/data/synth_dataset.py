"""Writing a synthetic dataset to disk in the Hume-Vidmimic2 layout: the organiser's
pickles, transcripts and split CSVs, and with `media` real mp4 files (`synth_media.py`).
What the clips are — labels, features, the realism world — is `synth.py`."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

from emi_ray import EMOTIONS
from emi_ray.data import synth_media  # render_clip looked up per call: tests replace it
from emi_ray.data.synth import (
    AUDIO_HZ,
    MEDIA_MAX_SECONDS,
    VIDEO_FPS,
    VIT_DIM,
    W2V_DIM,
    ClipSpec,
    EncoderWorld,
    Realism,
    as_realism,
    make_specs,
    projection,
    sequence_features,
    transcript,
)
from emi_ray.errors import LayoutError
from emi_ray.io import atomic_write_bytes, atomic_write_text


def check_target(out: str | Path, force: bool = False) -> None:
    """Refuse to write a dataset into `out` when it is a file, or a folder that is not empty
    (unless `force`: then files with the dataset's names are replaced, nothing else touched)."""
    out = Path(out)
    if (out.exists() and not out.is_dir()) or (out.is_symlink() and not out.exists()):
        raise LayoutError(f"{out}: exists and is not a directory; choose another output folder")
    if force or not out.is_dir():
        return
    try:
        found = sorted(p.name for p in out.iterdir())
    except OSError as e:
        raise LayoutError(f"{out}: cannot list ({e.strerror})") from None
    if found:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise LayoutError(f"{out}: not empty ({shown}); choose an empty or new folder, or pass --force to write "
                          f"the dataset over it")


def write_split_csvs(specs: list[ClipSpec], out: Path) -> None:
    header = "Filename," + ",".join(EMOTIONS)
    for split in ("train", "valid"):
        rows = [header]
        for s in specs:
            if s.split == split:
                rows.append(f"{s.vid}," + ",".join(f"{v:.6g}" for v in s.labels))
        atomic_write_text(out / f"{split}_split.csv", "\n".join(rows) + "\n")


def write_dataset(
    out: str | Path, n_videos: int = 600, seed: int = 0, media: bool = False,
    realism: bool | Realism = False,
) -> list[ClipSpec]:
    """Write a synthetic dataset in the Hume-Vidmimic2 layout; returns the per-clip specs.

    `realism`: the harder world of the module doc (True = `Realism()` defaults)."""
    out = Path(out)
    world = as_realism(realism)
    specs = make_specs(n_videos, seed, realism=world or False)
    for sub in ("vit", "wav2vec2", "text"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    w_v = projection(seed, VIT_DIM, 1)
    w_a = projection(seed, W2V_DIM, 2)
    enc_v = EncoderWorld.draw(seed, "video", VIT_DIM, world) if world else None
    enc_a = EncoderWorld.draw(seed, "audio", W2V_DIM, world) if world else None
    for s in specs:
        name = f"{s.vid:05d}"
        vit = sequence_features(s, "video", VIDEO_FPS, VIT_DIM, w_v)
        w2v = sequence_features(s, "audio", AUDIO_HZ, W2V_DIM, w_a)
        if world:
            vit, w2v = enc_v.apply(vit, s, "video"), enc_a.apply(w2v, s, "audio")
        atomic_write_bytes(out / "vit" / f"{name}.pkl", pickle.dumps(vit, protocol=4))
        atomic_write_bytes(out / "wav2vec2" / f"{name}.pkl", pickle.dumps(w2v, protocol=4))
        atomic_write_text(out / "text" / f"{name}.txt", transcript(s) + "\n")
    if media:
        (out / "raw").mkdir(exist_ok=True)
        for s in specs:  # realism's long clips render at most MEDIA_MAX_SECONDS (module doc)
            s = replace(s, duration=min(s.duration, MEDIA_MAX_SECONDS)) if world else s
            synth_media.render_clip(s, out / "raw" / f"{s.vid:05d}.mp4")
    write_split_csvs(specs, out)
    return specs
