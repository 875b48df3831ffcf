import numpy as np
import pytest

from emi_ray.data.batches import collate
from emi_ray.data.dataset import FeatureDataset, pool_time
from emi_ray.data.store import FeatureStore
from emi_ray.data.store_writer import Row, StoreWriter
from emi_ray.errors import StoreError

MODS = {"video": {"encoder": "x", "dim": 3, "rate_hz": 5.0},
        "audio": {"encoder": "y", "dim": 2, "rate_hz": 50.0},
        "text": {"encoder": "hash", "dim": 4, "rate_hz": None}}


def rows(n=7, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        split = ["train", "valid", "test"][i % 3]
        feats = {"video": rng.standard_normal((i + 1, 3)).astype(np.float32),
                 "text": rng.standard_normal(4).astype(np.float32)}
        if i != 4:  # id 14 lacks audio
            feats["audio"] = rng.standard_normal((2 * i + 3, 2)).astype(np.float32)
        labels = None if split == "test" else rng.random(6).astype(np.float32)
        out.append(Row(vid=10 + i, split=split, labels=labels, features=feats))
    return out


def write(tmp_path, data, per_shard=3):
    w = StoreWriter(tmp_path, MODS, command="test", rows_per_shard=per_shard)
    for r in data:
        w.add(r)
    w.close()
    return FeatureStore(tmp_path)


def test_round_trip_shapes_dtypes_order_and_masks(tmp_path):
    data = rows()
    store = write(tmp_path, data)
    assert [p.name for p in store.shards] == ["test-00000.parquet", "train-00000.parquet", "valid-00000.parquet"]
    assert not list((tmp_path / "shards").glob(".*tmp"))
    assert store.dims() == {"video": 3, "audio": 2, "text": 4}
    ds = FeatureDataset(store, ["train", "valid", "test"], ["video", "audio", "text"])
    assert list(ds.ids) == [r.vid for r in data]
    for i, r in enumerate(data):
        item = ds[i]
        for m, x in r.features.items():
            assert item[m].dtype == np.float32
            np.testing.assert_array_equal(item[m], x)
        if r.labels is None:
            assert np.isnan(item["labels"]).all()
        else:
            np.testing.assert_array_equal(item["labels"], r.labels)
    assert ds[4]["audio"] is None
    batch = collate([ds[i] for i in range(len(ds))], ds.dims)
    assert batch["video"].shape == (7, 7, 3) and batch["audio"].shape == (7, 15, 2)
    assert batch["video_mask"].sum(1).tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert batch["audio_present"].tolist() == [True] * 4 + [False] + [True] * 2
    assert not batch["audio_mask"][4].any() and (batch["audio"][4] == 0).all()
    assert batch["text"].shape == (7, 4)


def test_split_filter_and_info(tmp_path):
    store = write(tmp_path, rows())
    assert store.ids("valid") == [11, 14]
    ds = FeatureDataset(store, "train", ["video"])
    assert list(ds.ids) == [10, 13, 16]
    info = store.info()
    assert info["splits"] == {"train": 3, "valid": 2, "test": 2}
    assert info["modalities"]["audio"]["missing"] == 1
    assert info["modalities"]["video"]["length"]["max"] == 7


def test_lazy_columns_only(tmp_path):
    store = write(tmp_path, rows())
    t = store.read(["id"], "train")
    assert t.column_names == ["id"]


def test_resume_and_manifest_mismatch(tmp_path):
    write(tmp_path, rows()[:4])
    w = StoreWriter(tmp_path, MODS)
    assert w.done_ids() == {10, 11, 12, 13}
    with pytest.raises(StoreError, match="store was made with modalities"):
        StoreWriter(tmp_path, {"video": MODS["video"]})
    with pytest.raises(StoreError, match="dim 5, store expects 3"):
        w.add(Row(1, "train", None, {"video": np.zeros((2, 5), np.float32)}))


def test_missing_store_and_modality(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path)
    store = write(tmp_path, rows())
    with pytest.raises(StoreError, match="drop them from model.modalities"):
        FeatureDataset(store, "train", ["video", "nope"])


def test_pool_time():
    x = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_allclose(pool_time(x, 5)[:, 0], [0.5, 2.5, 4.5, 6.5, 8.5])
    assert pool_time(x, 20) is x
    assert pool_time(x, 3).shape == (3, 1)


def test_large_store_is_read_columnar(tmp_path):
    """5,000 videos of (T~35, 384+768) read by split without per-value Python objects."""
    import tracemalloc

    rng = np.random.default_rng(0)
    mods = {"video": {"encoder": "x", "dim": 384, "rate_hz": 5.0},
            "audio": {"encoder": "y", "dim": 768, "rate_hz": 5.0}}
    w = StoreWriter(tmp_path, mods, rows_per_shard=500)
    v = rng.standard_normal((35, 384)).astype(np.float32)
    a = rng.standard_normal((35, 768)).astype(np.float32)
    for i in range(5000):
        w.add(Row(i, "train", np.zeros(6, np.float32), {"video": v, "audio": a}))
    w.close()
    tracemalloc.start()
    ds = FeatureDataset(tmp_path, "train", ["video", "audio"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ds) == 5000
    np.testing.assert_array_equal(ds[4321]["audio"], a)
    assert peak < 50e6  # Python-heap allocations; the ~800 MB of values live in Arrow buffers
