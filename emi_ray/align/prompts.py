"""Text prompts of the paper's eq. (1) from affect annotations.

    T = "<Expression> (Intensity: <Level>)" + " with <AU codes>" + ", Valence=<v>, Arousal=<a>"

e.g. "Happy (Intensity: High) with AU6 (Cheek Raiser) and AU12 (Lip Corner Puller),
Valence=0.83, Arousal=0.65". The AU names are the FACS ones (Ekman & Friesen).
"""

from __future__ import annotations

from collections.abc import Iterable

from emi_ray.errors import InputError

# FACS action units: the main codes (those annotated in BP4D/DISFA/Aff-Wild2 and more).
AU_NAMES: dict[int, str] = {
    1: "Inner Brow Raiser",
    2: "Outer Brow Raiser",
    4: "Brow Lowerer",
    5: "Upper Lid Raiser",
    6: "Cheek Raiser",
    7: "Lid Tightener",
    9: "Nose Wrinkler",
    10: "Upper Lip Raiser",
    11: "Nasolabial Deepener",
    12: "Lip Corner Puller",
    13: "Cheek Puffer",
    14: "Dimpler",
    15: "Lip Corner Depressor",
    16: "Lower Lip Depressor",
    17: "Chin Raiser",
    18: "Lip Puckerer",
    20: "Lip Stretcher",
    22: "Lip Funneler",
    23: "Lip Tightener",
    24: "Lip Pressor",
    25: "Lips Part",
    26: "Jaw Drop",
    27: "Mouth Stretch",
    28: "Lip Suck",
    43: "Eyes Closed",
    45: "Blink",
    46: "Wink",
}

# AffectNet's eight classes, plus Aff-Wild2's "Other".
EXPRESSIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt", "Other")
_ALIASES = {"happiness": "Happy", "sadness": "Sad", "surprised": "Surprise", "angry": "Anger",
            "disgusted": "Disgust", "fearful": "Fear", "happy": "Happy", "sad": "Sad"}
LEVELS = ("Low", "Medium", "High")


def normalise_expression(name: str) -> str:
    """'happiness' / 'HAPPY' -> 'Happy'; unknown names are kept, title-cased."""
    key = name.strip().lower()
    for e in EXPRESSIONS:
        if e.lower() == key:
            return e
    return _ALIASES.get(key, name.strip().title())


def intensity_level(value: float | str | None) -> str | None:
    """A level name from a number in [0, 1] (thirds) or a level name; None stays None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        for lv in LEVELS:
            if value.strip().lower() == lv.lower():
                return lv
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"intensity {value!r}: expected Low, Medium, High or a number in [0, 1]") from None
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise InputError(f"intensity {v}: a number must lie in [0, 1]")
    return LEVELS[min(2, int(v * 3))]


def parse_aus(text: str | Iterable[int] | None) -> list[int]:
    """'6;12' / 'AU6 AU12' / '6,12' / [6, 12] -> [6, 12] (sorted, unique, FACS codes only)."""
    if text is None:
        return []
    if isinstance(text, str):
        parts = [p for p in text.replace(",", ";").replace(" ", ";").split(";") if p.strip()]
        codes = []
        for p in parts:
            p = p.strip().upper().removeprefix("AU")
            if not p.isdigit():
                raise InputError(f"AU code {p!r}: expected numbers like '6;12' or 'AU6;AU12'")
            codes.append(int(p))
    else:
        codes = [int(c) for c in text]
    bad = [c for c in codes if c not in AU_NAMES]
    if bad:
        raise InputError(f"unknown AU code(s) {bad}; FACS codes known: {sorted(AU_NAMES)}")
    return sorted(set(codes))


def au_phrase(aus: Iterable[int]) -> str:
    items = [f"AU{c} ({AU_NAMES[c]})" for c in aus]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def build_prompt(expression: str, intensity: float | str | None = None, aus: str | Iterable[int] | None = None,
                 valence: float | None = None, arousal: float | None = None) -> str:
    """The eq. (1) text for one annotation (parts without a value are left out)."""
    text = normalise_expression(expression)
    level = intensity_level(intensity)
    if level:
        text += f" (Intensity: {level})"
    codes = parse_aus(aus)
    if codes:
        text += " with " + au_phrase(codes)
    va = []
    if valence is not None:
        va.append(f"Valence={valence:.2f}")
    if arousal is not None:
        va.append(f"Arousal={arousal:.2f}")
    if va:
        text += ", " + ", ".join(va)
    return text
