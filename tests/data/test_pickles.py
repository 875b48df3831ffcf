import os
import pickle

import numpy as np
import pytest

from emi_ray.data.pickles import load_array, load_sequence
from emi_ray.errors import InputError


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_round_trip_numpy_arrays(tmp_path):
    for arr in (np.random.rand(5, 384).astype(np.float32), np.arange(6, dtype=np.float64)):
        p = tmp_path / "a.pkl"
        p.write_bytes(pickle.dumps(arr))
        np.testing.assert_array_equal(load_array(p), arr)


def test_refuses_code_and_never_runs_it(tmp_path):
    target = tmp_path / "pwned.txt"
    p = tmp_path / "00001.pkl"
    p.write_bytes(pickle.dumps(Evil(str(target))))
    with pytest.raises(InputError, match=r"00001.pkl: refused to unpickle (io|builtins).open"):
        load_array(p)
    assert not target.exists()


def test_refuses_os_system(tmp_path):
    class Sys:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "x"),))

    p = tmp_path / "s.pkl"
    p.write_bytes(pickle.dumps(Sys()))
    with pytest.raises(InputError, match="refused"):
        load_array(p)
    assert not (tmp_path / "x").exists()


def test_bad_files(tmp_path):
    good = pickle.dumps(np.zeros((4, 8), np.float32))
    cases = {
        "trunc.pkl": (good[: len(good) // 2], "not a readable pickle"),
        "empty.pkl": (b"", "empty file"),
        "list.pkl": (pickle.dumps([1, 2, 3]), "expected a numpy array, got list"),
        "nan.pkl": (pickle.dumps(np.full((2, 8), np.nan, np.float32)), "NaN"),
        "3d.pkl": (pickle.dumps(np.zeros((2, 2, 2))), "expected a \\(T, D\\) array"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=msg):
            load_sequence(tmp_path / name)
    (tmp_path / "dim.pkl").write_bytes(good)
    with pytest.raises(InputError, match="expected feature dim 384, got 8"):
        load_sequence(tmp_path / "dim.pkl", dim=384)
