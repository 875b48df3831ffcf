"""Property-based tests (hypothesis) of the CSV parser and the unpickler: any bytes give labels,
an array no bigger than the file, or one line naming the file; valid inputs round-trip."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from emi_ray.data.layout import HEADER, read_emotion_csv
from emi_ray.data.pickles import load_array
from emi_ray.errors import InputError, LayoutError

pytest.importorskip("hypothesis", reason="pip install -e .[dev] (hypothesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

PROPS = settings(max_examples=150, deadline=None, database=None,  # no .hypothesis/ folder in the repo
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPS
@given(st.binary(max_size=2048))
def test_csv_parser_on_any_bytes_returns_labels_or_one_line_error(tmp_path, data):
    p = tmp_path / "x.csv"
    p.write_bytes(data)
    try:
        labels = read_emotion_csv(p)
    except LayoutError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)
    else:
        assert all(v.shape == (6,) and ((0 <= v) & (v <= 1)).all() for v in labels.values())


_cell = st.floats(0, 1, allow_nan=False, width=32)


@PROPS
@given(st.dictionaries(st.integers(0, 10**18 - 1), st.lists(_cell, min_size=6, max_size=6), min_size=1, max_size=20),
       st.booleans(), st.sampled_from(["\n", "\r\n"]))
def test_csv_parser_round_trips_valid_files(tmp_path, rows, bom, newline):
    text = newline.join([",".join(HEADER), *(f"{i:05d}," + ",".join(repr(v) for v in r) for i, r in rows.items())])
    p = tmp_path / "x.csv"
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (text + newline).encode())
    got = read_emotion_csv(p)
    assert set(got) == set(rows)
    for i, r in rows.items():
        np.testing.assert_array_equal(got[i], np.asarray(r, np.float32))


@PROPS
@given(st.binary(max_size=512))
def test_unpickler_on_any_bytes_returns_an_array_or_one_line_error(tmp_path, data):
    p = tmp_path / "x.pkl"
    p.write_bytes(data)
    try:
        arr = load_array(p)
    except InputError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)
    else:
        assert isinstance(arr, np.ndarray) and arr.nbytes <= len(data)


_arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int16, np.uint8, ">f4"]),
                     hnp.array_shapes(min_dims=1, max_dims=3, max_side=6))


@PROPS
@given(_arrays, st.integers(0, 5), st.booleans(), st.data())
def test_unpickler_round_trips_arrays_and_survives_mutations(tmp_path, arr, protocol, fortran, draw):
    arr = np.asfortranarray(arr) if fortran else arr
    data = pickle.dumps(arr, protocol=protocol)
    p = tmp_path / "x.pkl"
    p.write_bytes(data)
    got = load_array(p)
    np.testing.assert_array_equal(got, arr)
    assert got.shape == arr.shape and got.dtype == pickle.loads(data).dtype
    # a damaged copy (bytes flipped, cut short) is an array no bigger than the file, or one line
    cut = draw.draw(st.integers(0, len(data)))
    flips = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4))
    bad = bytearray(data[:cut] if draw.draw(st.booleans()) else data)
    for i, b in flips:
        if i < len(bad):
            bad[i] = b
    p.write_bytes(bytes(bad))
    try:
        out = load_array(p)
    except InputError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(out, np.ndarray) and out.nbytes <= len(bad)
