"""The review audit table of a cohort (rule ``review_changes``).

``results/review/changes.tsv``: one row per gate a reviewer changed, from every sample's
``metrics.json`` (``review.changes``): sample, tube, gate and path, the data-driven and reviewed
coordinates (gate scale), the events in each, the sample's read-outs before and after, and the
workspace's path, SHA-256 and modification time. ``results/review/problems.tsv``: what could not be
used, from parsing the workflow (unreadable workspaces, samples not in the sheet) and from each
sample (renamed gates, another compensation or transform). Both have a header row when empty.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mrdflow.atomic import atomic_open

__all__ = ["CHANGES_TSV", "PROBLEMS_TSV", "REVIEW_DIR", "changes_rows", "format_coordinates", "write_changes"]

REVIEW_DIR = "results/review"
CHANGES_TSV = f"{REVIEW_DIR}/changes.tsv"
PROBLEMS_TSV = f"{REVIEW_DIR}/problems.tsv"
CHANGE_COLUMNS = ("sample_id", "patient_id", "visit", "tube", "gate", "path", "change", "data_coordinates",
                  "reviewed_coordinates", "count_data", "count_reviewed", "readouts_before", "readouts_after",
                  "workspace", "workspace_sha256", "workspace_mtime")
PROBLEM_COLUMNS = ("sample_id", "tube", "problem")


def _num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def format_coordinates(c: Mapping) -> str:
    """One gate's coordinates on one line: ``CD38 [0.62, –]; CD138 [0.49, –]``, a polygon's
    vertices, or ``or(CD56pos, CD16pos)``."""
    if "op" in c:
        return f"{c['op']}({', '.join(c['refs'])})"
    if "vertices" in c:
        pts = " ".join(f"({_num(x)}, {_num(y)})" for x, y in c["vertices"])
        return f"{' × '.join(c['channels'])}: {pts}"
    return "; ".join(f"{ch} [{_num(lo)}, {_num(hi)}]" for ch, (lo, hi) in c.items())


def _readouts(values: Mapping | None) -> str:
    return "; ".join(f"{k} {_num(v)}" for k, v in (values or {}).items())


def changes_rows(metrics: Iterable[Mapping]) -> list[dict]:
    """The audit rows of every changed gate of the samples' metrics (JSON objects)."""
    rows = []
    for m in metrics:
        review = m.get("review") or {}
        ws_of = {t: w for w in review.get("workspaces", []) for t in w["tubes"]}
        for c in review.get("changes", []):
            ws = ws_of.get(c["tube"], {})
            rows.append({
                "sample_id": m["sample_id"], "patient_id": m["patient_id"], "visit": m["visit"], "tube": c["tube"],
                "gate": c["gate"], "path": c["path"], "change": c["change"],
                "data_coordinates": format_coordinates(c["data"]),
                "reviewed_coordinates": format_coordinates(c["reviewed"]),
                "count_data": _num(c["count_data"]), "count_reviewed": _num(c["count_reviewed"]),
                "readouts_before": _readouts(review.get("readouts_before")),
                "readouts_after": _readouts(review.get("readouts_after")),
                "workspace": ws.get("path", ""), "workspace_sha256": ws.get("sha256", ""),
                "workspace_mtime": ws.get("mtime", ""),
            })
    return rows


def write_changes(metrics: Sequence[Mapping], parse_problems: Sequence[str], out_dir: str | Path = REVIEW_DIR
                  ) -> tuple[Path, Path]:
    """Write ``changes.tsv`` and ``problems.tsv`` under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = out_dir / Path(CHANGES_TSV).name, out_dir / Path(PROBLEMS_TSV).name
    with atomic_open(paths[0], "w", newline="") as fh:
        w = csv.DictWriter(fh, CHANGE_COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(changes_rows(metrics))
    with atomic_open(paths[1], "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(PROBLEM_COLUMNS)
        for p in parse_problems:
            w.writerow(["", "", p])
        for m in metrics:
            for p in (m.get("review") or {}).get("problems", []):
                w.writerow([m["sample_id"], p["tube"], p["error"]])
    return paths
