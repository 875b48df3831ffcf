"""affect.csv's optional columns: a `prompt` used as is (valence/arousal/expression may then be
empty), `valence_sd`/`arousal_sd` over frames; where each confidence weight comes from
(raters > frames > none), and files written before these columns read as before."""

from __future__ import annotations

import pytest

from emi_ray.align.corpus import (
    AffectItem,
    CorpusError,
    load_corpus,
    read_manifest,
    weight_summary,
    write_manifest,
)


def _corpus(tmp_path, text: str):
    for name in ("a.png", "b.png", "c.wav"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "affect.csv").write_text(text)
    return tmp_path


def test_old_files_read_as_before(tmp_path):
    c = load_corpus(_corpus(tmp_path, "path,modality,expression,intensity,aus,valence,arousal,valence_1,arousal_1,"
                                      "valence_2,arousal_2\na.png,vision,Sad,,,-0.5,-0.2,-0.4,-0.1,-0.6,-0.3\n"))
    it = c.items[0]
    assert it.prompt == "Sad, Valence=-0.50, Arousal=-0.20"
    assert it.weight_source == "raters" and it.weight == pytest.approx(1 / (1 + (0.1 / 0.2) ** 2))


def test_prompt_frames_and_sources(tmp_path):
    c = load_corpus(_corpus(tmp_path, "path,modality,expression,valence,arousal,prompt,valence_sd,arousal_sd,"
                                      "valence_1,arousal_1,valence_2,arousal_2\n"
                                      "a.png,vision,Happy,0.5,0.3,,0.1,0.3,,,,\n"
                                      "b.png,vision,,,,Valence=0.20,,,,,,\n"
                                      "c.wav,audio,Joy,,,Joy (Intensity: High),,,,,,\n"))
    a, b, clip = c.items
    assert a.prompt == "Happy, Valence=0.50, Arousal=0.30"  # built: the prompt cell is empty
    assert a.weight_source == "frames" and a.va_std == pytest.approx(0.2) and a.weight == pytest.approx(0.5)
    assert (b.expression, b.valence, b.prompt, b.weight_source, b.weight) == ("", None, "Valence=0.20", "none", 1.0)
    assert clip.prompt == "Joy (Intensity: High)" and clip.modality == "audio"
    assert weight_summary(c.items) == {"sources": {"raters": 0, "frames": 1, "none": 2}, "mean": pytest.approx(0.8333,
                                       abs=1e-4), "min": 0.5, "max": 1.0}


def test_raters_win_over_frames_and_round_trip(tmp_path):
    it = AffectItem("a.png", "vision", "Happy", "High", [6, 12], 0.8, 0.6, "train", [0.8, 0.8], [0.6, 0.6],
                    valence_sd=0.4, arousal_sd=0.4)
    assert it.weight_source == "raters" and it.weight == 1.0
    other = AffectItem("c.wav", "audio", "", None, [], None, None, "valid", prompt_text="Neutral", valence_sd=0.2)
    _corpus(tmp_path, "")
    write_manifest(tmp_path, [it, other], raters=2)
    back = read_manifest(tmp_path / "affect.csv")
    assert [(b.prompt, b.weight_source, b.split) for b in back] == [
        ("Happy (Intensity: High) with AU6 (Cheek Raiser) and AU12 (Lip Corner Puller), Valence=0.80, Arousal=0.60",
         "raters", "train"), ("Neutral", "frames", "valid")]
    assert back[1].valence_sd == pytest.approx(0.2) and back[1].arousal_sd is None


@pytest.mark.parametrize("text,match", [
    ("path,modality,expression,prompt\na.png,vision,Happy,\n", "row 2: valence is empty; give valence and arousal, "
                                                              "or a prompt"),
    ("path,modality,expression,valence,arousal\na.png,vision,,0.1,0.1\n", "row 2: empty expression"),
    ("path,modality,expression,valence,arousal,valence_sd\na.png,vision,Sad,0.1,0.1,-1\n", r"valence_sd=-1.0 outside"),
    ("path,modality,expression\na.png,vision,Sad\n", r"header lacks column\(s\) \['valence', 'arousal'\]"),
])
def test_errors_name_the_row(tmp_path, text, match):
    with pytest.raises(CorpusError, match=match):
        load_corpus(_corpus(tmp_path, text))
