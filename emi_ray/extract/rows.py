"""The rows the extraction stages pass along: error entries, object columns, a clip's parts.

A row that failed somewhere carries its failures in an `error` column: a JSON list of
{stage, file, message}. A long clip travels as several rows ("parts", `part` 0, 1, ... and
`parts` = the count on the last one); `Parts` joins them on the driver after encoding.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from emi_ray.errors import EmiError


def stage_error(stage: str, file: Any, e: BaseException) -> dict[str, str]:
    """One entry of a row's `error` column: what failed, on which file, why (one line)."""
    msg = str(e) if isinstance(e, EmiError) else f"{type(e).__name__}: {e}"
    return {"stage": stage, "file": str(file or ""), "message": " ".join(msg.split())[:500]}


def objects(values: list) -> np.ndarray:
    """`values` as a numpy object column (arrays of different shapes, strings)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class Parts:
    """Joins the encoded parts of each clip (rows in any order) into one row, once all are in:
    video features concatenated in order, everything else from the last part, errors of all."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[int, Any]] = {}

    def add(self, row: Any) -> Any | None:
        """The whole clip's row when `row` completes it, else None."""
        part, parts = int(row.get("part", 0)), int(row.get("parts", 1))
        if part == 0 and parts == 1:
            return row
        got = self.pending.setdefault(int(row["id"]), {})
        got[part] = row
        last = next((r for r in got.values() if int(r["parts"])), None)
        if last is None or len(got) < int(last["parts"]):
            return None
        del self.pending[int(row["id"])]
        rows = [got[i] for i in range(len(got))]
        merged = dict(last)
        if "video" in last and len(last["video"]):  # no frames in the last part: the video failed
            merged["video"] = np.concatenate([np.asarray(r["video"], np.float32) for r in rows])
        errors = [e for r in rows if r["error"] for e in json.loads(r["error"])]
        merged["error"] = json.dumps(errors) if errors else ""
        return merged
