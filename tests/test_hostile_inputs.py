"""A corpus of hostile or careless inputs: dataset folders, files, CSVs, stores, output folders.

Each case asserts what a user sees: exit code 2 with one line naming the file (or an
errors.csv row and the run going on), no traceback, no file outside the target touched
(the dataset folder and a folder of "private" files next to it are hashed before and after), and
a bounded peak of allocated memory (tracemalloc: Python objects and numpy arrays).
Property-based tests (hypothesis) drive the CSV parser and the unpickler with arbitrary bytes.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emi_ray.cli import app
from emi_ray.data.layout import HEADER, read_emotion_csv, read_layout
from emi_ray.data.pickles import load_sequence
from emi_ray.data.store import FeatureStore
from emi_ray.data.store_writer import Row, StoreWriter
from emi_ray.data.store_guard import store_lock
from emi_ray.errors import InputError, LayoutError

runner = CliRunner()
N = 12  # clips of the base dataset: vit (T, 384), wav2vec2 (T, 768), text


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from emi_ray.data.synth_dataset import write_dataset

    root = tmp_path_factory.mktemp("hostile") / "data"
    write_dataset(root, n_videos=N, seed=2)
    return root


@pytest.fixture
def world(base, tmp_path):
    """(dataset copy, private folder outside it, store path): the store is the only target."""
    data = tmp_path / "data"
    shutil.copytree(base, data)
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.txt").write_text("the password is hunter2\n")
    (private / "notes.csv").write_text("mine\n")
    return data, private, tmp_path / "features"


def snapshot(*roots: Path) -> dict:
    """Every entry under `roots` (symlinks not followed): kind, size, mtime and content hash."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                digest = ""
                if p.is_file() and not p.is_symlink():
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest,
                               os.readlink(p) if p.is_symlink() else "")
    return out


PEAK_MB = 200  # the base dataset's clips are small: no hostile file may make a command allocate more


def cli(*args: str, code: int | None = None):
    """Run the CLI in-process: never an uncaught exception or a traceback; `code` if given; the peak of
    what Python and numpy allocate meanwhile (tracemalloc) stays under PEAK_MB, whatever a file declares."""
    tracemalloc.start()
    try:
        r = runner.invoke(app, [str(a) for a in args])
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert peak < PEAK_MB, f"{args}: peak allocation {peak:.0f} MiB"
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "Traceback" not in r.output, r.output
    if code is not None:
        assert r.exit_code == code, r.output
    return r


def one_error_line(r, *needles: str) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.output
    for n in needles:
        assert n in lines[0], (n, r.output)
    return lines[0]


def errors_csv(store: Path) -> list[dict]:
    with (store / "errors.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def extract(data: Path, store: Path, *more: str, code: int | None = None):
    return cli("extract", data, "--out", store, *more, code=code)


def stored_ids(store: Path) -> list[int]:
    return sorted(FeatureStore(store).ids())


# ---------------------------------------------------------------- hostile files in the dataset

def test_symlinks_fifos_devices_and_bad_names_are_errors_csv_rows(world):
    data, private, store = world
    (data / "text" / "00002.txt").unlink()
    (data / "text" / "00002.txt").symlink_to(private / "secret.txt")  # leaves the dataset
    (data / "vit" / "00003.pkl").unlink()
    os.mkfifo(data / "vit" / "00003.pkl")  # would hang a reader
    (data / "wav2vec2" / "00004.pkl").unlink()
    (data / "wav2vec2" / "00004.pkl").symlink_to("/dev/zero")  # would read until memory runs out
    (data / "vit" / "00005.pkl").unlink()
    (data / "vit" / "00005.pkl").mkdir()  # a directory with a file's name
    (data / "vit" / "00006.pkl").unlink()
    (data / "vit" / "00006.pkl").symlink_to(data / "nowhere.pkl")  # broken
    shutil.copy(data / "vit" / "00007.pkl", data / "vit" / "٠٠٠٠٧.pkl")  # Arabic-Indic digits
    shutil.copy(data / "vit" / "00007.pkl", data / "vit" / ("9" * 30 + ".pkl"))  # not an int64
    (data / "elsewhere").mkdir()
    shutil.move(data / "vit" / "00008.pkl", data / "elsewhere" / "v8.pkl")
    (data / "vit" / "00008.pkl").symlink_to("../elsewhere/v8.pkl")  # inside the dataset: fine
    (data / "vit" / "README.md").write_text("not a feature file: ignored\n")
    before = snapshot(data, private)
    r = extract(data, store, code=1)
    assert snapshot(data, private) == before
    rows = errors_csv(store)
    by_file = {Path(e["file"]).name: e for e in rows}
    assert "outside the dataset" in by_file["00002.txt"]["message"] and by_file["00002.txt"]["id"] == "2"
    assert "FIFO" in by_file["00003.pkl"]["message"]
    assert "outside the dataset" in by_file["00004.pkl"]["message"]
    assert "a directory" in by_file["00005.pkl"]["message"]
    assert "broken symbolic link" in by_file["00006.pkl"]["message"]
    assert "not an id" in by_file["٠٠٠٠٧.pkl"]["message"] and by_file["٠٠٠٠٧.pkl"]["id"] == ""
    assert "not an id" in by_file["9" * 30 + ".pkl"]["message"]
    assert "00008.pkl" not in by_file and "README.md" not in by_file
    assert {e["stage"] for e in rows} == {"scan"}
    # the refused ids are left out (a re-run retries them); the others are stored
    assert stored_ids(store) == [i for i in range(1, N + 1) if i not in (2, 3, 4, 5, 6)]
    assert "5 failed" not in r.output and "7 failed" in r.output  # 5 ids + 2 files without an id
    assert "hunter2" not in r.output
    # nothing of the secret reached the store
    assert all(b"hunter2" not in p.read_bytes() for p in store.rglob("*") if p.is_file())


def test_duplicate_ids_are_refused_with_both_names(world):
    data, private, store = world
    shutil.copy(data / "vit" / "00012.pkl", data / "vit" / "12.pkl")
    before = snapshot(data, private)
    r = extract(data, store, code=2)
    one_error_line(r, "00012.pkl and 12.pkl both name id 12")
    assert snapshot(data, private) == before and not store.exists()


def test_file_over_the_size_cap_is_a_row(world):
    data, _, store = world
    size = (data / "wav2vec2" / "00001.pkl").stat().st_size
    r = extract(data, store, "--max-file-mb", str(size / 2**20 * 0.9), code=1)
    assert "over the" in r.output
    assert any("over the" in e["message"] and "--max-file-mb" in e["message"] for e in errors_csv(store))
    cli("extract", data, "--out", store.parent / "g", "--max-file-mb", "0", code=2)


class _Reduce:
    """Pickles as `fn(*args)`, then BUILD with `state` if given."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _hostile_pickles() -> dict[str, tuple[bytes, str]]:
    f4 = np.dtype("f4")
    rec = np._core.multiarray._reconstruct
    frombuf = np._core.numeric._frombuffer
    shared = b"\0" * 4000
    huge = _Reduce(np.ndarray, ((10**6, 384), f4))  # uninitialised memory: 1.5 GB
    return {
        # numpy.ndarray(shape, dtype, buffer, offset, strides) called directly
        "ndarray-call": (pickle.dumps(huge, protocol=2), "calls numpy.ndarray"),
        "zero-strides": (pickle.dumps(_Reduce(np.ndarray, ((10**6, 384), f4, b"abcd", 0, (0, 0)))),
                         "calls numpy.ndarray"),
        # numpy's path, but a declared shape the data does not fill
        "reconstruct-shape": (pickle.dumps(_Reduce(rec, (np.ndarray, (0,), b"b"),
                                                   (1, (10**6, 384), f4, False, b"\0" * 8))), "needs"),
        "frombuffer-shape": (pickle.dumps(_Reduce(frombuf, (b"\0" * 8, f4, (10**6, 384), "C"))), "needs"),
        # one data bytes object memoised into 100 arrays: 100x the file's size
        "memo-fanout": (pickle.dumps([_Reduce(rec, (np.ndarray, (0,), b"b"), (1, (1000,), f4, False, shared))
                                      for _ in range(100)]), "larger than the file"),
        "object-dtype": (pickle.dumps(np.array([1, "a"], dtype=object)), "not a plain number type"),
        "structured": (pickle.dumps(np.zeros(2, [("a", "f4")])), "not a plain number type"),
        "os-system": (pickle.dumps(_Reduce(os.system, ("true",))), "refused to unpickle"),
        "eval": (pickle.dumps(_Reduce(eval, ("1+1",))), "refused to unpickle"),
        # lengths and memo indices the C unpickler would allocate before reading
        "bytes8-2GB": (b"\x80\x04\x8e" + (2**31).to_bytes(8, "little") + b"abc.", "not a readable pickle"),
        "unicode8": (b"\x80\x04\x8d" + (2**40).to_bytes(8, "little") + b"x.", "not a readable pickle"),
        "memo-2G": (b"\x80\x04K\x01r\xff\xff\xff\x7f.", "memo index"),
        "frame": (b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"K\x01.", "not a readable pickle"),
        "garbage": (os.urandom(64), "pickle"),
        "not-array": (pickle.dumps({"a": 1}), "expected a numpy array, got dict"),
        "complex": (pickle.dumps(np.ones((2, 384), np.complex64)), "expected numeric values"),
        "bool": (pickle.dumps(np.ones((2, 384), bool)), "expected numeric values"),
        "zero-width": (pickle.dumps(np.ones((2, 0), np.float32)), "D >= 1"),
        "inf": (pickle.dumps(np.full((2, 384), np.inf, np.float32)), "NaN or infinite"),
    }


@pytest.mark.parametrize("case", sorted(_hostile_pickles()))
def test_hostile_pickles_are_refused_without_allocating(tmp_path, case):
    data, want = _hostile_pickles()[case]
    p = tmp_path / "00001.pkl"
    p.write_bytes(data)
    with pytest.raises(InputError, match=want) as e:
        load_sequence(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_hostile_pickles_in_a_dataset_land_in_errors_csv(world):
    data, private, store = world
    cases = _hostile_pickles()
    slots = [(f, vid) for f in ("vit", "wav2vec2") for vid in range(2, N + 1)]  # id 1 stays good
    victims = dict(zip(slots, sorted(cases)))
    for (folder, vid), case in victims.items():
        (data / folder / f"{vid:05d}.pkl").write_bytes(cases[case][0])
    before = snapshot(data, private)
    r = extract(data, store, "--skip-bad", code=0)
    assert snapshot(data, private) == before
    rows = {(Path(e["file"]).parent.name, int(e["id"])): e for e in errors_csv(store)}
    assert set(rows) == set(victims)
    for (folder, vid), case in victims.items():
        assert rows[folder, vid]["stage"] == "load", case
        assert cases[case][1] in rows[folder, vid]["message"] or case == "garbage", (case, rows[folder, vid])
    assert f"{N} done" in r.output and f"{N - 1} failed" in r.output  # stored with what was readable


def test_memory_error_on_one_file_is_a_row_and_the_run_goes_on(world, monkeypatch):
    import emi_ray.extract.organiser as organiser

    data, _, store = world
    real = organiser.load_sequence

    def flaky(path, *a, **kw):
        if Path(path).name == "00004.pkl":
            raise MemoryError()
        return real(path, *a, **kw)

    monkeypatch.setattr(organiser, "load_sequence", flaky)
    r = extract(data, store, code=1)
    assert f"{N - 1} done" in r.output and "1 failed" in r.output
    (row,) = {(e["id"], e["message"]) for e in errors_csv(store)}
    assert row[0] == "4" and "MemoryError" in row[1]
    monkeypatch.setattr(organiser, "load_sequence", real)
    r = extract(data, store, code=0)
    assert "1 done" in r.output and not (store / "errors.csv").exists()


def test_dim_is_what_most_files_agree_on_and_fixing_the_bad_file_resumes(world):
    data, _, store = world
    good = (data / "vit" / "00001.pkl").read_bytes()  # the lowest id: it used to fix the dim
    (data / "vit" / "00001.pkl").write_bytes(pickle.dumps(np.zeros((5, 12), np.float32)))
    r = extract(data, store, code=1)
    assert f"{N - 1} done" in r.output and "1 failed" in r.output
    assert FeatureStore(store).dims()["video"] == 384
    (e,) = errors_csv(store)
    assert e["id"] == "1" and "expected feature dim 384, got 12" in e["message"]
    (data / "vit" / "00001.pkl").write_bytes(good)
    r = extract(data, store, code=0)
    assert f"1 done, {N - 1} skipped" in r.output
    assert stored_ids(store) == list(range(1, N + 1))


def test_transcripts_with_bom_are_read_and_bad_ones_are_rows(world):
    data, _, store = world
    (data / "text" / "00001.txt").write_bytes(b"\xef\xbb\xbfhello there\n")
    (data / "text" / "00002.txt").write_bytes(b"caf\xe9\n")  # latin-1
    r = extract(data, store, code=1)
    (e,) = errors_csv(store)
    assert e["id"] == "2" and "not UTF-8" in e["message"] and "1 failed" in r.output


# ---------------------------------------------------------------- CSVs

def _split_csv(data: Path, content: bytes) -> None:
    (data / "train_split.csv").write_bytes(content)


GOOD_ROW = b"1,0,0.5,0,0,1,0.25\n"
HEADER_B = ",".join(HEADER).encode() + b"\n"
CSV_CASES = {
    "latin-1": HEADER_B + b"1,0,0,0,0,0,0\n2,0,0,0,0,0,0.5\xe9\n",
    "utf-16": (",".join(HEADER) + "\n1,0,0,0,0,0,0\n").encode("utf-16"),
    "long-field": HEADER_B + b"1," + b"0" * (128 * 1024 + 10) + b",0,0,0,0,0\n",
    "long-id": HEADER_B + b"9" * 40 + b",0,0,0,0,0,0\n",
    "unicode-id": HEADER_B + "٣".encode() + b",0,0,0,0,0,0\n",
    "negative-id": HEADER_B + b"-3,0,0,0,0,0,0\n",
    "nul": HEADER_B + b"1,0,0\x00,0,0,0,0\n",
    "quote": HEADER_B + b'1,"0,0,0,0,0,0\n',
    "twice": (",".join(HEADER) + ",Joy\n").encode() + b"1,0,0,0,0,0,0,0\n",
    "huge-header": b"x" * 100_000 + b"\n" + GOOD_ROW,
    "empty": b"",
    "bom-only": b"\xef\xbb\xbf",
    "binary": os.urandom(4096) + b"\xff",
    "value-text": HEADER_B + b"1,0,0,lots" + b"!" * 5000 + b",0,0,0\n",
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_split_csv_is_one_line_exit_2(world, case):
    data, private, store = world
    _split_csv(data, CSV_CASES[case])
    before = snapshot(data, private)
    r = extract(data, store, code=2)
    line = one_error_line(r, "train_split.csv")
    assert len(line) < 600, line  # one readable line, never the 128 KB field
    assert snapshot(data, private) == before and not store.exists()


def test_csv_with_a_bom_is_accepted(world):
    data, _, store = world
    content = (data / "train_split.csv").read_bytes()
    _split_csv(data, b"\xef\xbb\xbf" + content)  # Excel's "CSV UTF-8"
    extract(data, store, code=0)
    assert len(stored_ids(store)) == N


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "outside-symlink"])
def test_split_csv_that_is_not_a_regular_file(world, kind):
    data, private, store = world
    p = data / "valid_split.csv"
    p.unlink()
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dev-zero":
        p.symlink_to("/dev/zero")
    elif kind == "directory":
        p.mkdir()
    else:  # a regular file elsewhere: labels from outside the dataset would be stored
        shutil.copy(data / "train_split.csv", private / "labels.csv")
        p.symlink_to(private / "labels.csv")
    r = extract(data, store, code=2)
    one_error_line(r, "valid_split.csv", "outside the dataset" if kind in ("dev-zero", "outside-symlink")
                   else "not a regular file")
    assert not store.exists()


@pytest.mark.parametrize("case", ["latin-1", "long-field", "nul", "empty"])
def test_score_bad_predictions_is_one_line(world, case):
    data, _, _ = world
    preds = data.parent / "preds.csv"
    preds.write_bytes(CSV_CASES[case])
    r = cli("score", preds, data / "valid_split.csv", code=2)
    one_error_line(r, "preds.csv")


def test_csv_parser_reports_the_line():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.csv"
        p.write_bytes(CSV_CASES["latin-1"])
        with pytest.raises(LayoutError, match=r"x.csv:3: not UTF-8"):
            read_emotion_csv(p)
        p.write_bytes(CSV_CASES["long-field"])
        with pytest.raises(LayoutError, match=r"x.csv:2: not a valid CSV row \(field larger than field limit"):
            read_emotion_csv(p)


# ---------------------------------------------------------------- markup in paths

def test_rich_markup_in_paths_is_printed_literally(base, tmp_path):
    data = tmp_path / "d[/]a[bold]ta[/bold]"
    shutil.copytree(base, data)
    os.mkfifo(data / "vit" / "00099.pkl")  # an errors.csv row whose path is printed
    store = tmp_path / "f[red]x[/]"
    r = extract(data, store, code=1)
    assert f"{store}:" in r.output and str(data / "vit" / "00099.pkl") in r.output
    _split_csv(data, CSV_CASES["latin-1"])
    r = extract(data, tmp_path / "g", code=2)
    one_error_line(r, str(data / "train_split.csv"))
    r = cli("synth", tmp_path / "s[/]", "--videos", "4", code=0)
    assert str(tmp_path / "s[/]") in r.output
    r = cli("info", store, code=0)
    assert r.output.startswith(str(store)), r.output
    run = tmp_path / "run[/][bold]"
    r = cli("baseline", "--features", store, "--folds", "2", "--out", run, code=0)
    assert f"run directory: {run}" in r.output and f"emi-ray predict {run}" in r.output
    r = cli("info", run, code=0)
    assert r.output.startswith(f"{run}  (baseline run)") and f"features:   {store}" in r.output, r.output
    r = cli("train", "--features", store, "--out", tmp_path / "t[/]", "--set", "train.epochs=1",
            "--set", "train.workers=0", "--set", "model.dim=16", "--set", "model.fusion_heads=2", code=0)
    assert f"run directory: {tmp_path / 't[/]'}" in r.output, r.output


# ---------------------------------------------------------------- stores

@pytest.fixture
def made_store(world):
    data, private, store = world
    extract(data, store, code=0)
    return data, private, store


def test_truncated_shard_is_one_line_naming_it(made_store):
    data, _, store = made_store
    shard = sorted((store / "shards").glob("train-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:300])
    r = cli("info", store, "--json", code=2)
    one_error_line(r, str(shard), "not a readable Parquet shard")
    r = extract(data, store, code=2)  # resuming reads the stored ids
    one_error_line(r, shard.name)
    assert shard.stat().st_size == 300  # left as it was: the user decides


def test_foreign_shard_and_corrupt_manifests_are_one_line(made_store):
    data, _, store = made_store
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), store / "shards" / "valid-00077.parquet")
    r = cli("info", store, "--json", code=2)
    one_error_line(r, "valid-00077.parquet")
    (store / "shards" / "valid-00077.parquet").unlink()
    for content in (b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"modalities": {"video": {"dim": "x"}}}',
                    b'{"modalities": {"smell": {"dim": 3}}}'):
        (store / "manifest.json").write_bytes(content)
        r = cli("info", store, "--json", code=2)
        one_error_line(r, "manifest.json", "corrupt manifest")
        r = extract(data, store, code=2)
        one_error_line(r, "manifest.json")


def test_stale_temp_files_are_cleaned_on_resume_and_others_kept(made_store):
    data, _, store = made_store
    stale = [store / "shards" / ".train-00003.parquet.abc123.tmp", store / "shards" / ".test-k2j3.parquet.tmp",
             store / ".manifest.json.x1y2.tmp", store / ".errors.csv.q.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    keep = [store / "shards" / "notes.txt", store / "mine.txt"]
    for p in keep:
        p.write_text("the user's\n")
    extract(data, store, code=0)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_shard_names_never_collide(tmp_path):
    mods = {"video": {"encoder": "x", "dim": 2, "rate_hz": None}}
    w = StoreWriter(tmp_path, mods, rows_per_shard=1)
    w.add(Row(1, "train", None, {"video": np.ones((1, 2), np.float32)}))
    first = (tmp_path / "shards" / "train-00000.parquet").read_bytes()
    w._next_index = lambda split: 0  # a second writer that saw no shards yet
    w.add(Row(2, "train", None, {"video": np.ones((1, 2), np.float32)}))
    assert (tmp_path / "shards" / "train-00000.parquet").read_bytes() == first  # not replaced
    assert sorted(FeatureStore(tmp_path).ids()) == [1, 2]
    (tmp_path / "shards" / "train-00000.parquet").unlink()  # a gap: the next name is past the highest
    del w._next_index
    w.add(Row(3, "train", None, {"video": np.ones((1, 2), np.float32)}))
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["train-00001.parquet", "train-00002.parquet"]


# ---------------------------------------------------------------- output folders and concurrency

def test_extract_into_a_folder_that_is_not_a_store(world):
    data, private, _ = world
    before = snapshot(data, private)
    r = extract(data, private, code=2)
    one_error_line(r, str(private), "not a feature store", "--force")
    assert snapshot(data, private) == before  # refused before anything was written
    r = extract(data, data, code=2)  # --out DATA: the dataset itself
    assert snapshot(data, private) == before
    (private / "errors.csv").write_text("my own list\n")
    before = snapshot(data, private)
    r = extract(data, private, "--force", code=2)
    one_error_line(r, str(private / "errors.csv"), "not written by emi-ray")
    assert snapshot(data, private) == before
    (private / "errors.csv").unlink()
    r = extract(data, private, "--force", code=0)
    assert (private / "secret.txt").read_text() == "the password is hunter2\n"
    assert (private / "notes.csv").read_text() == "mine\n"
    extract(data, private, code=0)  # now a store: resumes without --force
    afile = private / "secret.txt"
    r = extract(data, afile, code=2)
    one_error_line(r, "not a directory")


def test_extract_never_deletes_an_errors_csv_it_did_not_write(world):
    data, _, store = world
    store.mkdir()
    (store / "errors.csv").write_text("id,note\n1,keep me\n")
    extract(data, store, code=2)
    extract(data, store, "--force", code=2)
    assert (store / "errors.csv").read_text() == "id,note\n1,keep me\n"


def test_a_second_concurrent_extract_is_refused_naming_the_holder(world):
    data, _, store = world
    extract(data, store, code=0)
    with store_lock(store):
        r = extract(data, store, code=2)
        line = one_error_line(r, str(store), "in use by pid", str(os.getpid()))
        assert "another `emi-ray extract`" in line
    r = extract(data, store, code=0)  # released: resumes, nothing stored twice
    assert f"0 done, {N} skipped" in r.output and stored_ids(store) == list(range(1, N + 1))


def test_synth_refuses_a_non_empty_folder_without_force(world):
    data, private, _ = world
    before = snapshot(data, private)
    for target in (data, private):
        r = cli("synth", target, "--videos", "4", code=2)
        one_error_line(r, str(target), "not empty", "--force")
    r = cli("synth", private / "secret.txt", "--videos", "4", code=2)
    one_error_line(r, "not a directory")
    assert snapshot(data, private) == before
    cli("synth", private, "--videos", "4", "--force", code=0)
    assert (private / "secret.txt").read_text() == "the password is hunter2\n"
    assert read_layout(private).ids() == [1, 2, 3, 4]


# ---------------------------------------------------------------- media (the lite pipeline, in-process)

def test_hostile_media_files_are_rows_in_the_local_pipeline(tmp_path):
    from emi_ray.data.synth_dataset import write_dataset
    from emi_ray.extract.driver import run_extract
    from emi_ray.extract.presets import plan_extract

    data = tmp_path / "data"
    write_dataset(data, n_videos=4, seed=1, media=True)
    private = tmp_path / "private"
    private.mkdir()
    shutil.move(data / "raw" / "00001.mp4", private / "home-video.mp4")
    (data / "raw" / "00001.mp4").symlink_to(private / "home-video.mp4")
    (data / "raw" / "00002.mp4").unlink()
    os.mkfifo(data / "raw" / "00002.mp4")
    (data / "audio").mkdir()
    (data / "audio" / "00003.mp3").symlink_to("/dev/zero")
    before = snapshot(data, private)
    s = run_extract(data, tmp_path / "f", plan_extract("lite"), local=True)
    assert snapshot(data, private) == before
    msgs = {(e["id"], Path(e["file"]).name): e["message"] for e in s.errors}
    assert "outside the dataset" in msgs[("1", "00001.mp4")]
    assert "FIFO" in msgs[("2", "00002.mp4")]
    assert "outside the dataset" in msgs[("3", "00003.mp3")]
    # 1 and 2 have no usable media; 3 has its mp4 but a refused mp3 (left out: a re-run retries it)
    assert (s.done, s.failed) == (1, 3) and stored_ids(tmp_path / "f") == [4]
