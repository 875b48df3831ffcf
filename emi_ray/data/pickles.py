"""Load organiser `.pkl` features without executing code.

A pickle from outside is code: `pickle.load` calls whatever callable the file names. The
restricted unpickler below resolves only the handful of numpy globals that an ndarray
pickle needs, so anything else (os.system, builtins.open, ...) is refused before it runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from emi_ray.errors import InputError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise InputError(
            f"{self._path}: refused to unpickle {module}.{name} (only numpy arrays are allowed)"
        )


def load_array(path: str | Path) -> np.ndarray:
    """Return the numpy array pickled in `path`, or raise InputError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise InputError(f"{path}: empty file")
    try:
        obj = _NumpyOnlyUnpickler(data, path).load()
    except InputError:
        raise
    except Exception as e:  # truncated or garbled pickles raise many types
        raise InputError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, np.ndarray):
        raise InputError(f"{path}: expected a numpy array, got {type(obj).__name__}")
    return obj


def load_sequence(path: str | Path, dim: int | None = None) -> np.ndarray:
    """A (T, D) float32 feature sequence; a 1-D array is one frame. Checks D when given."""
    arr = load_array(path)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"{path}: expected a (T, D) array with T >= 1, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{path}: expected numeric values, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{path}: expected feature dim {dim}, got {arr.shape[1]}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: contains NaN or infinite values")
    return arr
