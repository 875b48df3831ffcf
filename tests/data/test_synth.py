import hashlib
import time

import numpy as np
from sklearn.linear_model import Ridge

from emi_ray.data.dataset import FeatureDataset
from emi_ray.data.layout import read_layout
from emi_ray.data.synth import write_dataset
from emi_ray.metrics import mean_pearson


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_and_determinism(tmp_path):
    a = write_dataset(tmp_path / "a", n_videos=40, seed=3)
    write_dataset(tmp_path / "b", n_videos=40, seed=3)
    write_dataset(tmp_path / "c", n_videos=40, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    ds = read_layout(tmp_path / "a")
    assert len(ds.ids("train")) == 20 and len(ds.ids("valid")) == 10 and len(ds.ids("test")) == 10
    assert (tmp_path / "a" / "vit" / "00001.pkl").exists()
    assert (tmp_path / "a" / "train_split.csv").read_text().startswith(
        "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy\n")
    labels = np.stack([s.labels for s in a])
    assert (labels == 0).mean() > 0.3  # sparse rater fractions
    assert 0.1 < np.mean([s.corrupt is not None for s in a]) < 0.4


def test_600_features_only_under_20s(tmp_path):
    t0 = time.perf_counter()
    write_dataset(tmp_path, n_videos=600, seed=0)
    assert time.perf_counter() - t0 < 20


def _pooled(ds, m, segments):
    out = []
    for i in range(len(ds)):
        x = ds[i][m]
        b = [(k * len(x)) // segments for k in range(segments + 1)]
        out.append(np.concatenate([x[b[k]:max(b[k + 1], b[k] + 1)].mean(0) for k in range(segments)]))
    return np.stack(out)


def test_segment_pooling_beats_mean_pooling(synth_store):
    """The signal rewards the paper's temporal idea: per-segment pooling > whole-clip mean."""
    tr = FeatureDataset(synth_store, "train", ["audio"], max_len=10_000)
    va = FeatureDataset(synth_store, "valid", ["audio"], max_len=10_000)
    scores = {}
    for segments in (1, 4):
        model = Ridge(alpha=1000).fit(_pooled(tr, "audio", segments), tr.labels)
        scores[segments] = mean_pearson(model.predict(_pooled(va, "audio", segments)), va.labels)["mean_pearson"]
    assert scores[1] > 0.1
    assert scores[4] > scores[1] + 0.05, scores
