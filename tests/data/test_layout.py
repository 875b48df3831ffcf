import numpy as np
import pytest

from emi_ray.data.layout import read_layout
from emi_ray.errors import LayoutError

HEADER = "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"


def make(tmp_path, train_rows, valid_rows, files=(1, 2, 3, 4), header=HEADER):
    (tmp_path / "vit").mkdir()
    (tmp_path / "text").mkdir()
    for i in files:
        (tmp_path / "vit" / f"{i:05d}.pkl").write_bytes(b"x")
    (tmp_path / "text" / "00002.txt").write_text("hi")
    (tmp_path / "train_split.csv").write_text("\n".join([header, *train_rows]) + "\n")
    (tmp_path / "valid_split.csv").write_text("\n".join([HEADER, *valid_rows]) + "\n")
    return tmp_path


def test_reads_splits_test_ids_and_sources(tmp_path):
    ds = read_layout(make(tmp_path, ["1,0,0.5,0,0,1,0.25"], ["2,0,0,0,0,0,0"]))
    assert ds.ids("train") == [1] and ds.ids("valid") == [2] and ds.ids("test") == [3, 4]
    np.testing.assert_allclose(ds.labels[1], [0, 0.5, 0, 0, 1, 0.25])
    assert ds.labels[1].dtype == np.float32
    assert ds.sources(2) == ["vit", "text"] and ds.sources(3) == ["vit"]
    assert ds.path("vit", 4).name == "00004.pkl"


@pytest.mark.parametrize(
    "train_rows, header, message",
    [
        (["1,0,0,0,0,0"], HEADER.replace(",Joy", ""), "missing column"),
        (["1,0,0,0,0,0,0,0"], HEADER + ",Anger", "unknown column"),
        (["1,0,0,1.5,0,0,0"], HEADER, "Determination=1.5 outside [0, 1]"),
        (["1,0,0,nan,0,0,0"], HEADER, "outside [0, 1]"),
        (["1,0,0,0,0,0,0", "1,0,0,0,0,0,0"], HEADER, "duplicate id 1"),
        (["abc,0,0,0,0,0,0"], HEADER, "not an integer id"),
        ([], HEADER, "empty split"),
    ],
)
def test_validation_errors_name_file_and_problem(tmp_path, train_rows, header, message):
    make(tmp_path, train_rows, ["2,0,0,0,0,0,0"], header=header)
    with pytest.raises(LayoutError, match="train_split.csv") as e:
        read_layout(tmp_path)
    assert message in str(e.value)


def test_id_in_both_splits(tmp_path):
    make(tmp_path, ["1,0,0,0,0,0,0"], ["1,0,0,0,0,0,0"])
    with pytest.raises(LayoutError, match=r"appear in both"):
        read_layout(tmp_path)


def test_warns_about_csv_ids_without_files(tmp_path):
    make(tmp_path, ["1,0,0,0,0,0,0", "77,0,0,0,0,0,0"], ["2,0,0,0,0,0,0"])
    with pytest.warns(UserWarning, match="1 CSV id.*no files: 77"):
        ds = read_layout(tmp_path)
    assert 77 not in ds.ids("test")


def test_missing_dir_and_csv(tmp_path):
    with pytest.raises(LayoutError, match="not found"):
        read_layout(tmp_path / "nope")
    (tmp_path / "vit").mkdir()
    with pytest.raises(LayoutError, match="train_split.csv: split CSV not found"):
        read_layout(tmp_path)
