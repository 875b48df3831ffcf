"""Score a predictions CSV against a labels CSV (both in the submission format)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from emi_ray.data.layout import read_emotion_csv, read_split_csv
from emi_ray.errors import InputError, LayoutError
from emi_ray.metrics import mean_pearson


def read_predictions(path: Path) -> dict[int, np.ndarray]:
    """Predictions use the label format; values need not lie in [0, 1] to be scored."""
    return read_emotion_csv(path, InputError, labels=False)


def score_files(preds_csv: str | Path, labels_csv: str | Path) -> dict:
    preds = read_predictions(Path(preds_csv))
    try:
        labels = read_split_csv(Path(labels_csv))
    except LayoutError as e:
        raise InputError(str(e)) from None
    missing = sorted(set(labels) - set(preds))
    extra = sorted(set(preds) - set(labels))
    if missing:
        raise InputError(f"{preds_csv}: {len(missing)} id(s) of {labels_csv} have no prediction, "
                         f"e.g. {missing[:10]}")
    if extra:
        raise InputError(f"{preds_csv}: {len(extra)} id(s) are not in {labels_csv}, e.g. {extra[:10]}")
    ids = sorted(labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = mean_pearson(np.stack([preds[i] for i in ids]), np.stack([labels[i] for i in ids]))
    result["warnings"] = [str(w.message) for w in caught]
    result["videos"] = len(ids)
    return result
