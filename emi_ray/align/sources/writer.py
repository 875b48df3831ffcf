"""Writing a converted corpus: the target check, the parts, the merged affect.csv, the counts.

```
OUT/
  corpus.json              written by emi-ray corpus: one record per part (format, source, options, counts)
  parts/<part>/affect.csv  the rows of one conversion (part = format + source name, e.g. affectnet-training)
  affect.csv               all parts' rows: what `emi-ray pretrain --affect OUT` reads
  images/<format>/...      face crops and frames
  audio/<format>/...       voice clips
```
Several conversions can go into one OUT (AffectNet's training and validation CSVs, Aff-Wild2,
Hume-Vidmimic2): each replaces only its own part, then affect.csv is rebuilt from all parts.
Re-running one is idempotent and resumes: media already in OUT are not made again. OUT must be
empty, new, or a corpus written by this module; anything else needs `force` (then an affect.csv
there is replaced). OUT may not lie inside the source folder (a source is never modified).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emi_ray.align.corpus import MANIFEST, AffectItem, CorpusError, read_manifest, weight_summary, write_manifest
from emi_ray.align.sources.inputs import Refused
from emi_ray.data.synth_dataset import check_target
from emi_ray.io import atomic_write_text, held_alone

MARKER = "corpus.json"
LOCK = ".corpus.lock"
WRITTEN_BY = "emi-ray corpus"


@dataclass
class Tally:
    """Rows refused, by reason, with the first such row (one line) to show the user."""

    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, detail: str, n: int = 1) -> None:
        self.skipped[reason] += n
        self.examples.setdefault(reason, " ".join(detail.split())[:300])


@dataclass
class ConversionResult:
    out: Path
    format: str
    part: str
    rows: int  # rows this conversion kept
    modalities: dict[str, int]
    splits: dict[str, int]
    skipped: dict[str, int]  # reason -> rows
    examples: dict[str, str]  # reason -> the first such row
    weights: dict  # weight_summary of the kept rows
    corpus_rows: int  # rows in OUT/affect.csv (all parts)
    seconds: float

    def to_dict(self) -> dict:
        return {**asdict(self), "out": str(self.out), "csv": str(self.out / MANIFEST)}


def _marker(out: Path) -> dict | None:
    try:
        rec = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("written_by") == WRITTEN_BY else None


def _save_marker(out: Path, rec: dict) -> None:
    atomic_write_text(out / MARKER, json.dumps(rec, indent=2, sort_keys=True))


def claim_target(out: Path, sources: Iterable[Path], force: bool) -> None:
    """Refuse an OUT that is not ours (unless `force`) or that lies inside a source folder; then claim it."""
    real_out = os.path.realpath(out)
    for src in sources:
        real_src = os.path.realpath(src)
        if real_out == real_src or real_out.startswith(real_src.rstrip(os.sep) + os.sep):
            raise CorpusError(f"{out}: inside the source folder {src}; a source is never written to, choose an "
                              f"--out outside it")
    if _marker(out) is None:
        check_target(out, force)  # an empty or new folder, or --force
        out.mkdir(parents=True, exist_ok=True)
        _save_marker(out, {"written_by": WRITTEN_BY, "parts": {}})


def part_name(fmt: str, source: Path) -> str:
    return f"{fmt}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', source.stem or source.name).strip('.') or 'source'}"


def _begin_part(out: Path, part: str, record: dict) -> None:
    rec = _marker(out) or {"written_by": WRITTEN_BY, "parts": {}}
    old = rec["parts"].get(part)
    if old is not None and old.get("source") != record["source"]:
        raise CorpusError(f"{out}: part {part} was converted from {old.get('source')}, not {record['source']}; "
                          f"choose another --out (or rename the source)")
    rec["parts"][part] = {**record, "done": False}
    _save_marker(out, rec)


def _merge_parts(out: Path) -> int:
    """Rebuild OUT/affect.csv from every finished part; a path in two parts is an error naming both."""
    rec = _marker(out)
    items: list[AffectItem] = []
    owner: dict[str, str] = {}
    for part in sorted(p for p, r in rec["parts"].items() if r.get("done")):
        for it in read_manifest(out / "parts" / part / MANIFEST, root=out, check_files=False):
            if it.path in owner:
                raise CorpusError(f"{out}: {it.path} is in parts {owner[it.path]} and {part}; convert into "
                                  f"separate --out folders")
            owner[it.path] = part
            items.append(it)
    write_manifest(out, items, raters=max((len(i.raters_valence) for i in items), default=0))
    return len(items)


def _make_all(jobs: list, make: Callable, tally: Tally, workers: int,
              progress: Callable[[int, int], None] | None) -> list[AffectItem]:
    """make(job) for every job (threads: decoding and encoding release the GIL), in job order."""

    def attempt(job):
        try:
            return make(job)
        except Refused as r:
            return r

    items = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for k, got in enumerate(pool.map(attempt, jobs), start=1):
            if isinstance(got, Refused):
                tally.skip(got.reason, str(got))
            else:
                items.append(got)
            if progress:
                progress(k, len(jobs))
    return items


def convert(out: Path, fmt: str, source: Path, jobs: list, make: Callable[[object], AffectItem], tally: Tally,
            options: dict, workers: int = 4, progress: Callable[[int, int], None] | None = None) -> ConversionResult:
    """Run `make` over `jobs` (each writes its media into OUT, or raises Refused), then write the part,
    the merged affect.csv and the part's record in corpus.json. `claim_target` must have run."""
    t0 = time.perf_counter()
    part = part_name(fmt, source)
    with held_alone(out / LOCK, f"the corpus {out} (another `emi-ray corpus` is writing it)", CorpusError):
        _begin_part(out, part, {"format": fmt, "source": str(source.resolve()), "options": options})
        items = _make_all(jobs, make, tally, workers, progress)
        if not items:
            shown = ", ".join(f"{r} {n}" for r, n in tally.skipped.most_common()) or "no rows in the source"
            raise CorpusError(f"{source}: no row kept ({shown}); check the source folder and its annotation files")
        write_manifest(out / "parts" / part, items)
        rec = _marker(out)
        rec["parts"][part].update(done=True, rows=len(items), skipped=dict(tally.skipped))
        _save_marker(out, rec)
        total = _merge_parts(out)
    count = lambda key: dict(Counter(getattr(i, key) for i in items))  # noqa: E731
    return ConversionResult(out, fmt, part, len(items), count("modality"), count("split"), dict(tally.skipped),
                            dict(tally.examples), weight_summary(items), total, round(time.perf_counter() - t0, 3))
