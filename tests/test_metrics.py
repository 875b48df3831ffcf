import numpy as np
import pytest
from scipy.stats import pearsonr

from emi_ray import EMOTIONS
from emi_ray.metrics import mean_pearson, pearson


def test_agrees_with_scipy():
    rng = np.random.default_rng(0)
    y = rng.random((50, 6))
    p = y + rng.standard_normal((50, 6)) * 0.3
    res = mean_pearson(p, y)
    expected = [pearsonr(p[:, k], y[:, k])[0] for k in range(6)]
    for k, name in enumerate(EMOTIONS):
        assert abs(res["per_emotion"][name] - expected[k]) < 1e-6
    assert abs(res["mean_pearson"] - np.mean(expected)) < 1e-6


def test_zero_variance_gives_zero_with_warning():
    rng = np.random.default_rng(1)
    y = rng.random((20, 6))
    p = rng.random((20, 6))
    p[:, 2] = 0.5
    with pytest.warns(RuntimeWarning, match="Determination: predictions have zero variance"):
        res = mean_pearson(p, y)
    assert res["per_emotion"]["Determination"] == 0.0
    assert np.isfinite(res["mean_pearson"])


def test_perfect_and_shape_errors():
    y = np.random.default_rng(2).random((10, 6))
    assert mean_pearson(y * 2 + 1, y)["mean_pearson"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_pearson(y[:, :5], y[:, :5])
    assert pearson(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
