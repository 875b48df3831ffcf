"""`emi-ray corpus`: AffectNet, Aff-Wild2 and Hume-Vidmimic2 fixtures written here in their exact
public formats become affect corpora; every skipped row is counted by reason, crops follow the
face box, Aff-Wild2 rows carry their window's VA spread (the confidence weight), Vidmimic rows a
prompt from their six intensities; sources are never modified, OUT is guarded, re-runs are
idempotent, and `pretrain` learns from a corpus made of all three."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from emi_ray.align.corpus import load_corpus, read_image
from emi_ray.align.synth import write_affect_corpus
from emi_ray.errors import EmiError

runner = CliRunner()
AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
                    "valence,arousal")
CODES = {"Neutral": 0, "Happy": 1, "Sad": 2, "Surprise": 3, "Fear": 4, "Disgust": 5, "Anger": 6, "Contempt": 7}
EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU_HEADER = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"


def write_jpg(path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as o:
        s = o.add_stream("mjpeg")
        s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], "yuvj444p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuvj444p")
        o.mux(s.encode(frame))
        o.mux(s.encode(None))


def snapshot(root) -> dict:
    """Every file under root -> its bytes' digest (a source must come out unchanged)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "link"
            for p in sorted(root.rglob("*")) if not p.is_dir() or p.is_symlink()}


def synthetic_faces(tmp_path, n: int, seed: int):
    """(items, folder): synthetic annotated 64x64 faces whose pixels show their annotation."""
    folder = tmp_path / f"faces{seed}"
    return write_affect_corpus(folder, n=n, seed=seed, modalities=("vision",), noisy=0.0), folder


def write_affectnet(tmp_path, n: int, seed: int = 1, extra_rows: str = "", name: str = "training.csv"):
    """AffectNet's layout: ROOT/Manually_Annotated_Images/<sub>/<file>.jpg and ROOT/<name>; each
    synthetic face pasted at a random place of a larger photo, its box in the CSV."""
    root = tmp_path / "affectnet"  # several CSVs (seeds) share it
    images = root / "Manually_Annotated_Images"
    items, faces = synthetic_faces(tmp_path, n, seed)
    rng = np.random.default_rng(seed)
    lines = [AFFECTNET_HEADER]
    for k, it in enumerate(items):
        face = read_image(faces / it.path)
        photo = (rng.random((96, 112, 3)) * 255).astype(np.uint8)
        x, y = int(rng.integers(0, 112 - 64)), int(rng.integers(0, 96 - 64))
        photo[y : y + 64, x : x + 64] = face
        rel = f"{k % 3}/{seed}-{k:04d}.jpg"
        write_jpg(images / rel, photo)
        marks = ";".join(f"{v:.1f}" for v in rng.random(8) * 60)
        lines.append(f"{rel},{x},{y},64,64,{marks},{CODES[it.expression]},{it.valence},{it.arousal}")
    (root / name).write_text("\n".join(lines) + "\n" + extra_rows)
    return root / name, images, items


def write_vidmimic(tmp_path, n: int, seed: int = 0, broken: tuple[int, ...] = ()):
    """Hume-Vidmimic2's layout: train/valid split CSVs and audio/<id:05d>.mp3 (1 s synthetic voices)."""
    from emi_ray.data.synth import make_specs
    from emi_ray.data.synth_dataset import write_split_csvs
    from emi_ray.data.synth_media import render_clip

    root = tmp_path / "vidmimic"
    specs = [dataclasses.replace(s, split="valid" if s.split == "test" else s.split, duration=1.0, onset=0.0,
                                 offset=1.0, corrupt=None) for s in make_specs(n, seed)]
    (root / "audio").mkdir(parents=True)
    write_split_csvs(specs, root)
    for s in specs:
        if s.vid not in broken:
            render_clip(s, root / "audio" / f"{s.vid:05d}.mp3")
    return root, specs


# ---------------------------------------------------------------- AffectNet

HOSTILE_ROWS = (
    "0/none.jpg,0,0,10,10,,8,-2,-2\n"  # expression 8 None
    "0/unc.jpg,0,0,10,10,,9,-2,-2\n"  # 9 Uncertain
    "0/noface.jpg,0,0,10,10,,10,-2,-2\n"  # 10 No-Face
    "0/badva.jpg,0,0,10,10,,1,-2,0.3\n"  # invalid valence
    "0/text.jpg,0,0,10,10,,1,abc,0.3\n"  # non-numeric
    "../outside.jpg,0,0,10,10,,1,0.5,0.3\n"  # leaves the image folder
    "0/missing.jpg,0,0,10,10,,1,0.5,0.3\n"  # no such image
    "0/garbage.jpg,0,0,10,10,,1,0.5,0.3\n"  # not an image
    "0/link.jpg,0,0,10,10,,1,0.5,0.3\n"  # a symlink to a file outside
    "0/zero.jpg,0,0,0,10,,1,0.5,0.3\n"  # no box area
    "0/far.jpg,500,500,10,10,,1,0.5,0.3\n"  # box outside the image
    "0/1-0000.jpg,0,0,10,10,,1,0.5,0.3\n"  # an image of an earlier row
    "0/short.jpg,0,0\n"  # too few fields
)


def test_affectnet_keeps_crops_and_counts_every_skip(tmp_path):
    from emi_ray.align.sources.affectnet import convert_affectnet

    csv_path, images, items = write_affectnet(tmp_path, 12, extra_rows=HOSTILE_ROWS)
    (images / "0" / "garbage.jpg").write_bytes(b"not a jpeg at all")
    (images / "0" / "far.jpg").write_bytes((images / "0" / "1-0000.jpg").read_bytes())
    (tmp_path / "secret.jpg").write_bytes((images / "0" / "1-0000.jpg").read_bytes())
    os.symlink(tmp_path / "secret.jpg", images / "0" / "link.jpg")
    before = snapshot(csv_path.parent)
    res = convert_affectnet(csv_path, images, tmp_path / "out", workers=2)
    assert res.rows == 12 and res.modalities == {"vision": 12}
    assert res.skipped == {"expression 8 (None)": 1, "expression 9 (Uncertain)": 1, "expression 10 (No-Face)": 1,
                           "invalid valence/arousal": 1, "non-numeric value": 1, "path outside the source folder": 1,
                           "missing image": 1, "undecodable image": 1, "refused file": 1, "bad face box": 1,
                           "face box outside the image": 1, "malformed row": 1, "repeated image": 1}
    assert "training.csv:18" in res.examples["non-numeric value"]  # the line, for the user
    assert snapshot(csv_path.parent) == before  # the source is never modified
    corpus = load_corpus(tmp_path / "out")
    assert len(corpus.items) == 12
    for it, src in zip(corpus.items, items):
        assert it.path.startswith("images/affectnet/") and it.path.endswith(".png")
        crop = read_image(corpus.root / it.path)
        assert crop.shape == (64, 64, 3)  # the face box, not the photo
        face = read_image(tmp_path / "faces1" / src.path).astype(float)
        assert np.abs(crop - face).mean() < 12  # the face itself (JPEG-compressed), not the background
        assert it.expression == src.expression and it.prompt == (
            f"{src.expression}, Valence={src.valence:.2f}, Arousal={src.arousal:.2f}")
        assert it.weight_source == "none" and it.weight == 1.0
    assert res.weights["sources"] == {"raters": 0, "frames": 0, "none": 12}


def test_affectnet_split_resume_parts_and_guard(tmp_path):
    from emi_ray.align.sources.affectnet import convert_affectnet

    csv_path, images, _ = write_affectnet(tmp_path, 6)
    out = tmp_path / "out"
    convert_affectnet(csv_path, images, out, split="train")
    first = snapshot(out)
    res = convert_affectnet(csv_path, images, out, split="train")  # idempotent
    assert snapshot(out) == first and res.corpus_rows == 6
    # a second CSV (validation) adds its own part; the merged affect.csv has both
    val_csv, _, _ = write_affectnet(tmp_path, 4, seed=2, name="validation.csv")
    res = convert_affectnet(val_csv, images, out, split="valid")
    assert (res.rows, res.corpus_rows, res.splits) == (4, 10, {"valid": 4})
    assert sorted(json.loads((out / "corpus.json").read_text())["parts"]) == ["affectnet-training",
                                                                             "affectnet-validation"]
    assert {i.split for i in load_corpus(out).items} == {"train", "valid"}
    # refused: a folder that is not ours, an OUT inside the source, a CSV without AffectNet's columns
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(EmiError, match="not empty .*--force"):
        convert_affectnet(csv_path, images, other)
    assert convert_affectnet(csv_path, images, other, force=True).rows == 6
    with pytest.raises(EmiError, match="inside the source folder"):
        convert_affectnet(csv_path, images, images / "corpus")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,expression\nx.jpg,1\n")
    with pytest.raises(EmiError, match=r"bad.csv: header lacks column\(s\) \['subDirectory_filePath'"):
        convert_affectnet(bad, images, tmp_path / "out3")


# ---------------------------------------------------------------- Aff-Wild2

def write_affwild2(tmp_path):
    """Two videos in the ABAW layout. v1 (Train_Set): VA + EXPR + AU for 8 frames, frame 4 is
    invalid in every file, frame 6 has an unparsable VA line, frame 7's image is missing.
    v2 (Validation_Set): VA only, 4 frames."""
    ann, frames = tmp_path / "aw" / "annotations", tmp_path / "aw" / "cropped_aligned"
    va1 = [(0.1, 0.2), (0.3, 0.4), (0.5, 0.0), (-5, -5), (0.2, -0.2), "abc,0.1", (0.6, 0.6), (0.7, 0.5)]
    expr1 = [4, 4, 1, -1, 0, 0, 6, 6]
    au1 = [[0] * 12, [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0], [0] * 12, [-1] * 12, [1] + [0] * 11, [0] * 12,
           [0] * 12, [0] * 12]
    va2 = [(-0.5, 0.1), (-0.4, 0.3), (-0.2, 0.2), (0.0, 0.0)]
    files = {("VA_Estimation_Challenge", "Train_Set", "v1"): ["valence,arousal", *(
        v if isinstance(v, str) else f"{v[0]},{v[1]}" for v in va1)],
        ("EXPR_Recognition_Challenge", "Train_Set", "v1"): [EXPR_HEADER, *map(str, expr1)],
        ("AU_Detection_Challenge", "Train_Set", "v1"): [AU_HEADER, *(",".join(map(str, a)) for a in au1)],
        ("VA_Estimation_Challenge", "Validation_Set", "v2"): ["valence,arousal", *(f"{a},{b}" for a, b in va2)]}
    for (task, split, video), lines in files.items():
        (ann / task / split).mkdir(parents=True, exist_ok=True)
        (ann / task / split / f"{video}.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    for video, n in (("v1", 8), ("v2", 4)):
        for i in range(1, n + 1):
            if (video, i) != ("v1", 7):
                write_jpg(frames / video / f"{i:05d}.jpg", (rng.random((32, 32, 3)) * 255).astype(np.uint8))
    return ann, frames, va1, va2


def test_affwild2_frames_windows_and_counts(tmp_path):
    from emi_ray.align.sources.affwild2 import convert_affwild2

    ann, frames, va1, va2 = write_affwild2(tmp_path)
    before = snapshot(tmp_path / "aw")
    res = convert_affwild2(ann, frames, tmp_path / "out", every=1)
    assert res.skipped == {"no valid annotation": 1, "unparsable annotation line": 1, "missing frame image": 1}
    assert res.rows == 12 - 3 and res.splits == {"train": 5, "valid": 4}
    assert snapshot(tmp_path / "aw") == before
    items = {it.path: it for it in load_corpus(tmp_path / "out").items}
    f2 = items["images/affwild2/v1/00002.jpg"]
    assert (f2.expression, f2.aus, f2.valence, f2.arousal) == ("Happy", [6, 12], 0.3, 0.4)
    assert f2.prompt == ("Happy with AU6 (Cheek Raiser) and AU12 (Lip Corner Puller), Valence=0.30, Arousal=0.40")
    assert items["images/affwild2/v1/00005.jpg"].expression == "Neutral"
    assert items["images/affwild2/v1/00005.jpg"].aus == [1]
    v2 = items["images/affwild2/v2/00001.jpg"]
    assert v2.expression == "" and v2.prompt == "Valence=-0.50, Arousal=0.10" and v2.split == "valid"
    assert v2.weight_source == "none"  # every=1: a row stands for one frame, no spread
    # every=2: frames 1, 3, 5, 7 of v1 (7's image missing), 1 and 3 of v2; the spread over each pair
    res = convert_affwild2(ann, frames, tmp_path / "out2", every=2)
    assert res.skipped == {"missing frame image": 1} and res.rows == 5
    items = {it.path: it for it in load_corpus(tmp_path / "out2").items}
    w = items["images/affwild2/v2/00001.jpg"]
    want = np.std(np.array(va2[:2]), axis=0)
    assert w.weight_source == "frames" and (w.valence_sd, w.arousal_sd) == pytest.approx(tuple(want), abs=1e-4)
    assert w.weight == pytest.approx(1 / (1 + (want.mean() / 0.2) ** 2), abs=1e-3)
    # frame 3's window (3, 4): frame 4 is invalid, one valid VA -> no spread
    assert items["images/affwild2/v1/00003.jpg"].weight_source == "none"
    assert res.weights["sources"]["frames"] == 3


def test_affwild2_hostile_files_are_counted(tmp_path):
    from emi_ray.align.sources.affwild2 import convert_affwild2

    ann, frames, _, _ = write_affwild2(tmp_path)
    va = ann / "VA_Estimation_Challenge" / "Train_Set"
    (tmp_path / "elsewhere.txt").write_text("valence,arousal\n0.1,0.1\n")
    os.symlink(tmp_path / "elsewhere.txt", va / "v3.txt")  # an annotation file leaving the folder
    (va / "v4.txt").write_text("valence;arousal\n0.1;0.1\n")  # not the published header
    (va / "v5.txt").write_bytes(b"\xff\xfe\x00binary")
    res = convert_affwild2(ann, frames, tmp_path / "out", every=1)
    assert res.skipped["refused annotation file (files)"] == 3
    assert "outside the dataset folder" in res.examples["refused annotation file (files)"]
    with pytest.raises(EmiError, match="annotation folder .* not found"):
        convert_affwild2(tmp_path / "nope", frames, tmp_path / "o2")
    with pytest.raises(EmiError, match="--every 0"):
        convert_affwild2(ann, frames, tmp_path / "o2", every=0)


# ---------------------------------------------------------------- Hume-Vidmimic2

def test_emotion_prompt():
    from emi_ray.align.sources.vidmimic import emotion_prompt

    assert emotion_prompt(np.array([0.0, 0.2, 0.0, 0.0, 0.05, 0.9])) == (
        "Joy", "High", "Joy (Intensity: High) and Amusement (Intensity: Low)")
    assert emotion_prompt(np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0])) == (
        "Admiration", "Medium", "Admiration (Intensity: Medium)")
    assert emotion_prompt(np.zeros(6)) == ("Neutral", None, "Neutral")
    assert emotion_prompt(np.array([0.4, 0.5, 0.6, 0, 0, 0]), top=3)[2].count("Intensity") == 3


def test_vidmimic_audio_rows(tmp_path):
    from emi_ray.align.sources.vidmimic import convert_vidmimic, emotion_prompt

    root, specs = write_vidmimic(tmp_path, 8, broken=(3,))
    (root / "audio" / "00005.mp3").write_bytes(b"ID3 but no audio frames here")
    before = snapshot(root)
    res = convert_vidmimic(root, tmp_path / "out")
    assert res.skipped == {"missing audio": 1, "undecodable audio": 1} and res.rows == 6
    assert snapshot(root) == before
    corpus = load_corpus(tmp_path / "out")
    by_id = {s.vid: s for s in specs}
    for it in corpus.items:
        spec = by_id[int(it.path.rsplit("/", 1)[1][:5])]
        assert it.modality == "audio" and it.valence is None and it.split == spec.split
        assert it.prompt == emotion_prompt(spec.labels)[2] and it.weight_source == "none"
    header = (tmp_path / "out" / "affect.csv").read_text().splitlines()[0]
    assert "prompt" in header.split(",")


# ---------------------------------------------------------------- the command line

def test_cli_reports_counts_and_one_line_errors(tmp_path):
    from emi_ray.cli import app

    csv_path, images, _ = write_affectnet(tmp_path, 4, extra_rows="0/x.jpg,0,0,1,1,,9,-2,-2\n")
    r = runner.invoke(app, ["corpus", "affectnet", str(csv_path), "--images", str(images), "--out",
                            str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["rows"] == 4 and rec["skipped"] == {"expression 9 (Uncertain)": 1}
    r = runner.invoke(app, ["corpus", "affectnet", str(csv_path), "--images", str(images), "--out",
                            str(tmp_path / "c")])
    assert r.exit_code == 0 and "expression 9 (Uncertain): 1" in r.stdout and "emi-ray pretrain --affect" in r.stdout
    for args in (["affectnet", str(csv_path), "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "d")],
                 ["affectnet", str(csv_path), "--images", str(images), "--out", str(csv_path)],
                 ["affwild2", str(tmp_path), "--frames", str(tmp_path), "--out", str(tmp_path / "e"), "--every", "0"],
                 ["vidmimic", str(tmp_path / "nope"), "--out", str(tmp_path / "f")],
                 ["affectnet", str(csv_path), "--images", str(images), "--out", str(tmp_path / "g"),
                  "--split", "test"]):
        r = runner.invoke(app, ["corpus", *args])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, r.output)


# ---------------------------------------------------------------- end to end: pretrain on all three

@pytest.mark.slow
def test_pretrain_learns_from_a_converted_corpus(tmp_path):
    from emi_ray.align.trainer import run_pretrain
    from emi_ray.cli import app
    from emi_ray.config import load_config

    csv_path, images, _ = write_affectnet(tmp_path, 160, seed=4)
    ann, frames, _, _ = write_affwild2(tmp_path)
    vid_root, _ = write_vidmimic(tmp_path, 160, seed=5)
    out = tmp_path / "corpus"
    for args in (["affectnet", str(csv_path), "--images", str(images)], ["affwild2", str(ann), "--frames", str(frames)],
                 ["vidmimic", str(vid_root)]):
        r = runner.invoke(app, ["corpus", *args, "--out", str(out)])
        assert r.exit_code == 0, r.output
    corpus = load_corpus(out)
    assert {m: len(corpus.of(m)) for m in corpus.modalities} == {"vision": 160 + 2, "audio": 160}
    cfg = load_config(None, ["train.workers=0", "stage1.lr_max=3e-3", "stage1.lr_min=1e-5",
                             "stage1.batch_size=32", "stage1.restart_epochs=10", "stage1.epochs=10"])
    m = run_pretrain(cfg, out, "both", run_dir=tmp_path / "run", in_process=True).metrics
    for mod in ("vision", "audio"):
        assert m[f"{mod}_r1"] >= 3 * m[f"{mod}_chance_r1"], m
