"""Eq. (1) prompts and the affect corpus CSV (validation errors name the file and row)."""

from __future__ import annotations

import pytest

from emi_ray.align.corpus import CorpusError, load_corpus
from emi_ray.align.prompts import AU_NAMES, build_prompt, intensity_level, parse_aus
from emi_ray.errors import EmiError


def test_paper_example():
    assert build_prompt("Happy", "High", "6;12", 0.83, 0.65) == (
        "Happy (Intensity: High) with AU6 (Cheek Raiser) and AU12 (Lip Corner Puller), Valence=0.83, Arousal=0.65")


def test_prompt_variants():
    assert build_prompt("happiness", 0.9, [12, 6], 0.8, 0.6).startswith("Happy (Intensity: High) with AU6")
    assert build_prompt("Sad", "low", "AU1;AU4;AU15", -0.5, -0.2) == (
        "Sad (Intensity: Low) with AU1 (Inner Brow Raiser), AU4 (Brow Lowerer) and "
        "AU15 (Lip Corner Depressor), Valence=-0.50, Arousal=-0.20")
    assert build_prompt("Neutral", None, "", 0.0, 0.1) == "Neutral, Valence=0.00, Arousal=0.10"
    assert intensity_level(0.5) == "Medium" and intensity_level(0.1) == "Low"
    assert parse_aus("AU12, 6") == [6, 12] and AU_NAMES[26] == "Jaw Drop"
    with pytest.raises(EmiError, match="unknown AU"):
        parse_aus("6;99")


HEADER = "path,modality,expression,intensity,aus,valence,arousal,valence_1,arousal_1,valence_2,arousal_2\n"


def _corpus(tmp_path, rows: str):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "affect.csv").write_text(HEADER + rows)
    return tmp_path


def test_corpus_reads_and_weights(tmp_path):
    c = load_corpus(_corpus(tmp_path, "a.png,vision,happy,High,6;12,0.83,0.65,0.8,0.6,0.86,0.7\n"))
    it = c.items[0]
    assert it.prompt.startswith("Happy (Intensity: High) with AU6")
    assert 0.9 < it.weight <= 1.0
    assert it.split in ("train", "valid")


@pytest.mark.parametrize("row,match", [
    ("a.png,vision,Happy,High,6,1.5,0.1,,,,\n", "valence=1.5 outside"),
    ("a.png,vision,Happy,High,6;99,0.5,0.1,,,,\n", "unknown AU"),
    ("b.png,vision,Happy,High,6,0.5,0.1,,,,\n", "b.png not found"),
    ("a.png,smell,Happy,High,6,0.5,0.1,,,,\n", "modality 'smell'"),
    ("a.png,vision,Happy,High,6,abc,0.1,,,,\n", "valence 'abc' is not a number"),
])
def test_corpus_errors_name_file_and_row(tmp_path, row, match):
    root = _corpus(tmp_path, "a.png,vision,Happy,High,6,0.5,0.1,,,,\n".replace("a.png", "c.png") + row)
    (tmp_path / "c.png").write_bytes(b"x")
    with pytest.raises(CorpusError, match=match) as e:
        load_corpus(root)
    assert f"{root / 'affect.csv'}: row 3" in str(e.value)


def test_corpus_missing_column(tmp_path):
    (tmp_path / "affect.csv").write_text("path,modality,expression\n")
    with pytest.raises(CorpusError, match=r"affect.csv: header lacks column\(s\) \['valence', 'arousal'\]"):
        load_corpus(tmp_path)
