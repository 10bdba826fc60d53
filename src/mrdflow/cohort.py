"""Cohort stage: per-sample metrics joined into cohort tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

from mrdflow.atomic import atomic_open
from mrdflow.sample import flatten_metrics

__all__ = ["sample_metrics_rows", "write_table"]

#: Columns that lead the sample table, in this order; the rest follow alphabetically.
LEADING = ["sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status", "errors",
           "pc_pc_pct", "pc_aberrant_pc_pct", "mrd_mrd_status", "mrd_mrd_level", "mrd_sensitivity",
           "mrd_n_nucleated", "mrd_n_aberrant_pc", "mrd_hemodilution", "nk_nkg2a_pct", "cart_cells_per_ul"]


def sample_metrics_rows(files: Iterable[str | Path]) -> list[dict]:
    """One flat row per ``metrics.json`` (nested keys joined with '_')."""
    rows = []
    for f in files:
        with open(f) as fh:
            rows.append(flatten_metrics(json.load(fh)))
    return rows


def _cell(v) -> str:
    if v is None:
        return "NA"
    if isinstance(v, float):
        return "NA" if not math.isfinite(v) else f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


def write_table(rows: Sequence[dict], path: str | Path, leading: Sequence[str] = LEADING) -> None:
    """Write rows as TSV (union of keys; leading columns first), atomically."""
    keys: list[str] = [k for k in leading if any(k in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(keys))
    cols = keys + rest
    with atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
