"""On the built-in synthetic data the ablation ordering shows what the paper claims."""

import pytest

pytestmark = pytest.mark.slow


def test_paper_ordering_beyond_seed_spread(tmp_path):
    import ray

    from emi_ray.config import Config, apply_overrides
    from emi_ray.data.default import ensure_default_store
    from emi_ray.train.ablate import run_ablation

    features = ensure_default_store()
    base = apply_overrides(Config(), ["train.epochs=8"])
    try:
        res = run_ablation(base, features, seeds=3, out_dir=tmp_path,
                           rows=["base", "+TFE+QAM", "V", "V+A+T"])
    finally:
        ray.shutdown()
    rows = {r["name"]: r for r in res["rows"]}

    def beats(a, b):
        gap = rows[a]["mean"] - rows[b]["mean"]
        return gap > rows[a]["std"] + rows[b]["std"], (a, b, gap, rows[a]["std"], rows[b]["std"])

    ok, info = beats("+TFE+QAM", "base")
    assert ok, info
    ok, info = beats("V+A+T", "V")
    assert ok, info
    assert (tmp_path / "ablation.md").read_text().count("±") == 2 + 4  # two headers, four rows
    assert (tmp_path / "ablation.png").stat().st_size > 1000
