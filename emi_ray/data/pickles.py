"""Load organiser `.pkl` features without executing code or trusting declared sizes.

A pickle from outside is code: `pickle.load` calls whatever callable the file names. The
restricted unpickler below resolves only numpy's own array reconstruction path, each name
to a checking stand-in, so anything else (os.system, builtins.open, ...) is refused before
it runs:

- `numpy.ndarray` is only a marker for `_reconstruct`; called directly (`ndarray(shape,
  dtype, buffer, offset, strides)`: zero strides, or no buffer = uninitialised memory) it
  is refused.
- `_reconstruct(ndarray, shape, code)` + BUILD (protocols 0-4) and `_frombuffer(bytes,
  dtype, shape, order)` (protocol 5) build the array through numpy's own code, after
  checking that the data bytes present in the file are exactly shape x itemsize; the
  declared shape never allocates anything.
- `numpy.dtype` takes real numbers only (bool, int, uint, float, complex codes; no object,
  string or structured dtypes) and the plain state numpy writes.
- `_codecs.encode(str, 'latin1')` and `bytes()` (how protocols 0-2 spell bytes) are the only
  other names.

Before any of that runs the opcodes are scanned (`pickletools`): a length that points past
the end of the file or a memo index far beyond the file's size is refused without
allocating it (the C unpickler would allocate first). All arrays of one file together may
hold at most as many bytes as the file: a bound on the decoded size relative to the file.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np

from emi_ray.data.untrusted_files import DEFAULT_MAX_FILE_MB, read_capped
from emi_ray.errors import InputError

MAX_OPS = 100_000  # an array pickle has ~25 opcodes; this many is not a feature array
MAX_NDIM = 32
_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f(2|4|8|12|16)|c(8|16|24|32))")
_MEMO_OPS = {"BINPUT", "LONG_BINPUT", "PUT", "BINGET", "LONG_BINGET", "GET"}


class _Refused(Exception):
    """A pickle that is well formed but not a plain numpy array (message: why)."""


class _NdarrayMarker:
    """What `numpy.ndarray` resolves to: valid only as `_reconstruct`'s first argument."""

    def __call__(self, *args, **kwargs):
        raise _Refused("calls numpy.ndarray(...) directly (only numpy's own array pickles are accepted)")


_NDARRAY = _NdarrayMarker()


class _Dtype:
    """A checked `numpy.dtype(code, align, copy)`; numpy's BUILD state is checked, then applied."""

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or not _DTYPE.fullmatch(code):
            raise _Refused(f"dtype {code!r} is not a plain number type")
        self.dtype = np.dtype(code, bool(align), True)  # a copy: BUILD must not touch numpy's singletons

    def __setstate__(self, state):
        if (not isinstance(state, tuple) or len(state) != 8 or state[0] != 3 or state[1] not in ("<", ">", "|", "=")
                or state[2:5] != (None, None, None) or state[5:] != (-1, -1, 0)):
            raise _Refused("a dtype state other than numpy's for a plain number type")
        self.dtype.__setstate__(state)


def _dtype_of(d) -> np.dtype:
    if not isinstance(d, _Dtype):
        raise _Refused("an array whose dtype is not a numpy.dtype")
    return d.dtype


def _shape(shape) -> tuple[int, ...]:
    if (not isinstance(shape, tuple) or len(shape) > MAX_NDIM
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"array shape {str(shape)[:60]} is not a tuple of at most {MAX_NDIM} sizes")
    return shape


class _Array:
    """What `_reconstruct` returns: becomes an ndarray once BUILD hands it numpy's state."""

    def __init__(self, loader: _NumpyOnlyUnpickler):
        self.loader, self.array, self.shape = loader, None, None

    def __setstate__(self, state):
        if self.shape is not None:
            raise _Refused("an array built twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("an array state other than numpy's")
        version, (shape, dtype, fortran, raw) = (state[0], state[1:]) if len(state) == 5 else (1, state)
        shape, dtype = _shape(shape), _dtype_of(dtype)
        if not isinstance(raw, (bytes, bytearray)) or not isinstance(fortran, bool) or version != 1:
            raise _Refused("an array state other than numpy's (data must be bytes)")
        self.loader.admit(shape, dtype, len(raw))
        self.shape, self.dtype = shape, dtype
        if not self.loader.shape_only:  # numpy's own path: _reconstruct(ndarray, (0,), b'b') + __setstate__
            a = np.ndarray.__new__(np.ndarray, (0,), "b")
            a.__setstate__((1, shape, dtype, fortran, raw))
            self.array = a


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode other than protocol 2's bytes")
    return text.encode("latin1")


def _empty_bytes(*args):
    if args:
        raise _Refused("bytes(...) other than protocol 2's empty bytes")
    return b""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path, shape_only: bool = False):
        super().__init__(io.BytesIO(data))
        self._path, self.budget, self.shape_only = path, len(data), shape_only
        self._names = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): _Dtype,
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
            ("_codecs", "encode"): _codecs_encode,
            ("__builtin__", "bytes"): _empty_bytes,  # protocols 0-2 spell b"" as bytes()
            ("builtins", "bytes"): _empty_bytes,
        }

    def find_class(self, module: str, name: str):
        found = self._names.get((module, name))
        if found is None:
            raise InputError(
                f"{self._path}: refused to unpickle {module}.{name} (only numpy arrays are allowed)"
            )
        return found

    def admit(self, shape: tuple[int, ...], dtype: np.dtype, n_bytes: int) -> None:
        """Check that `n_bytes` of data fill `shape` x `dtype` exactly and fit what is left of the
        file's size (all arrays of one file together hold at most the file's bytes)."""
        need = dtype.itemsize
        for n in shape:
            need *= n
        if need != n_bytes:
            raise _Refused(f"array of shape {shape} x {dtype} needs {need} bytes, the file holds {n_bytes}")
        if n_bytes > self.budget:
            raise _Refused("arrays larger than the file itself")
        self.budget -= n_bytes

    def _reconstruct(self, subtype, shape, code):
        if subtype is not _NDARRAY:
            raise _Refused("_reconstruct of something other than numpy.ndarray")
        _shape(shape)  # what numpy writes, (0,); it allocates nothing here
        return _Array(self)

    def _frombuffer(self, buf, dtype, shape, order):
        if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
            raise _Refused("_frombuffer other than numpy's in-band protocol-5 array")
        shape, dtype = _shape(shape), _dtype_of(dtype)
        self.admit(shape, dtype, len(buf))
        out = _Array(self)
        out.shape, out.dtype = shape, dtype
        if not self.shape_only:
            out.array = np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)
            if not out.array.flags.writeable:
                out.array = out.array.copy()
        return out


def _scan_opcodes(data: bytes) -> None:
    """Refuse what the C unpickler would allocate before noticing: lengths past the end of the
    data (pickletools reads only what is there) and memo indices beyond any sane count."""
    n = 0
    for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
        n += 1
        if n > MAX_OPS:
            raise _Refused(f"more than {MAX_OPS} pickle operations: not a feature array")
        if op.name in _MEMO_OPS and isinstance(arg, int) and not 0 <= arg <= MAX_OPS:
            raise _Refused(f"memo index {arg} out of range")
        if op.name == "FRAME" and arg > len(data):
            raise ValueError(f"a frame of {arg} bytes in a file of {len(data)}: truncated")
        if op.name in ("PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"):
            raise _Refused(f"pickle opcode {op.name} (not used by numpy arrays)")


def _load(path: str | Path, limit: int, root: str | Path | None, shape_only: bool) -> _Array:
    path = Path(path)
    data = read_capped(path, limit, root=root, what="pickle")
    if not data:
        raise InputError(f"{path}: empty file")
    try:
        _scan_opcodes(data)
        obj = _NumpyOnlyUnpickler(data, path, shape_only).load()
    except InputError:
        raise
    except _Refused as e:
        raise InputError(f"{path}: refused: {e}") from None
    except MemoryError:
        raise InputError(f"{path}: out of memory while unpickling ({len(data)} bytes)") from None
    except RecursionError:
        raise InputError(f"{path}: not a readable pickle (nested too deeply)") from None
    except Exception as e:  # truncated or garbled pickles raise many types
        raise InputError(f"{path}: not a readable pickle ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, _Array):
        raise InputError(f"{path}: expected a numpy array, got {type(obj).__name__}")
    if obj.shape is None:
        raise InputError(f"{path}: not a readable pickle (an array without its data)")
    return obj


def load_array(path: str | Path, limit: int = DEFAULT_MAX_FILE_MB * 2**20, root: str | Path | None = None
               ) -> np.ndarray:
    """Return the numpy array pickled in `path`, or raise InputError naming the file.
    `limit`: most bytes read; `root`: refuse a path that resolves outside it."""
    return _load(path, limit, root, shape_only=False).array


def array_shape(path: str | Path, limit: int = DEFAULT_MAX_FILE_MB * 2**20, root: str | Path | None = None
                ) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the array pickled in `path`, checked as `load_array` does, without building it."""
    a = _load(path, limit, root, shape_only=True)
    return a.shape, a.dtype


def load_sequence(path: str | Path, dim: int | None = None, limit: int = DEFAULT_MAX_FILE_MB * 2**20,
                  root: str | Path | None = None) -> np.ndarray:
    """A (T, D) float32 feature sequence; a 1-D array is one frame. Checks D when given."""
    arr = load_array(path, limit, root)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{path}: expected a (T, D) array with T >= 1 and D >= 1, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{path}: expected numeric values, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{path}: expected feature dim {dim}, got {arr.shape[1]}")
    try:
        arr = arr.astype(np.float32, copy=False)
    except MemoryError:
        raise InputError(f"{path}: out of memory converting shape {arr.shape} to float32") from None
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: contains NaN or infinite values")
    return arr
