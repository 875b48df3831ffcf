"""The transcriber's output folder: its own files may be rewritten, the user's never."""

from __future__ import annotations

import pytest

from emi_ray.errors import InputError
from emi_ray.extract.transcripts import RECORD, TranscriptDir


def test_own_transcripts_are_rewritten_the_users_refused(tmp_path):
    d = TranscriptDir(tmp_path / "t")
    d.check([1, 2])  # nothing there yet (not even the folder)
    d.write(1, "first try")
    again = TranscriptDir(tmp_path / "t")  # a re-run: the record says 00001.txt is ours
    again.check([1, 2])
    again.write(1, "second try")
    assert (tmp_path / "t" / "00001.txt").read_text() == "second try\n"
    (tmp_path / "t" / "00002.txt").write_text("the user's\n")
    with pytest.raises(InputError, match=r"00002.txt: already there and not written by emi-ray"):
        TranscriptDir(tmp_path / "t").check([1, 2])
    assert (tmp_path / "t" / "00002.txt").read_text() == "the user's\n"
    assert (tmp_path / "t" / RECORD).read_text().split() == ["00001"]


def test_a_symlink_or_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "00003.txt").symlink_to(tmp_path / "elsewhere.txt")  # dangling: still not ours
    with pytest.raises(InputError, match="00003.txt: already there"):
        TranscriptDir(tmp_path / "t").check([3])
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        TranscriptDir(tmp_path / "f")
