"""A sample gated again with a reviewer's gates (rule ``review_sample``).

The tubes a reviewer's workspace holds get the workspace's gates, applied as drawn (a static
template, as FlowJo applies them); the sample's other tubes are placed from their data as before.
Before a reviewed tube is gated its workspace is checked against the data-driven gates of the same
tube (``gates.xml`` of the sample's folder, :mod:`mrdflow.review._compare`): every gate under its
own path, the same compensation, the same transforms. A tube that fails the check keeps its
data-driven gates and flags, with the cause in ``review.problems``; the cohort goes on.

The data-driven record stays where it was (``results/samples/<sample>/``: the cohort's PC model is
fit on those events, so a review changes its own sample's numbers and never another's); the
reviewed one is written beside it (``reviewed/``), carrying the audit (``review``) that
:func:`mrdflow.sample.finish_sample` completes with the read-outs before and after.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mrdflow.config import Tube
from mrdflow.errors import MrdflowError
from mrdflow.review._compare import GateChange, ReviewError, check_compensation, check_transforms, compare_gates
from mrdflow.review._index import ALL_SAMPLES, ReviewedTube
from mrdflow.sample._outputs import REVIEWED_DIR, SAMPLE_FILES

__all__ = ["review_sample", "workspace_stamp"]

log = logging.getLogger(__name__)
#: Fields of a tube's QC record that a static (reviewed) gating cannot know and that stay the
#: data-driven gating's: the time QC and the placement evidence.
_KEPT_QC = ("time_removed_pct", "time_segments", "time_reasons", "flow_rate_failed", "gates", "placement_events")


def workspace_stamp(path: str | os.PathLike) -> dict:
    """The workspace as used: path, SHA-256 of its bytes and modification time (ISO 8601, UTC)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    mtime = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, tz=datetime.UTC)
    return {"path": os.fspath(path), "sha256": h.hexdigest(), "mtime": mtime.isoformat(timespec="seconds")}


def _data_counts(gating_tsv: Path) -> dict[tuple[str, str], int]:
    """(tube, population label) -> events, from the data-driven ``gating.tsv``."""
    with open(gating_tsv, newline="") as fh:
        return {(r["tube"], r["population"]): int(r["count"]) for r in csv.DictReader(fh, delimiter="\t")}


def _count(counts: Mapping[tuple[str, str], int], tube: str, change: GateChange) -> int | None:
    return counts.get((tube, change.gate), counts.get((tube, change.path)))


def _prepare(rt: ReviewedTube, tube: Tube, data_dir: Path, settings, data_outdir: Path, data_record: Mapping):
    """The reviewed template of one tube and its changes, after the checks (ReviewError/GatingError)."""
    import flowkit as fk

    from mrdflow.gating import template_from_workspace
    from mrdflow.sample._analysis import _setup

    where = f"review workspace {rt.workspace}, sample {rt.ws_sample!r} (tube {tube.key})"
    if tube.tube not in data_record.get("gates_of", {}):
        raise ReviewError(f"{where}: the tube has no data-driven gates to compare with (it was not gated: "
                          f"{[e['error'] for e in data_record.get('errors', []) if e['tube'] == tube.tube]})")
    data_strategy = fk.parse_gating_xml(str(data_outdir / data_record["gates_of"][tube.tube]))
    template = template_from_workspace(rt.workspace, ALL_SAMPLES, tube.panel, data_dir / tube.fcs,
                                       sample_id=rt.ws_sample)
    opened = _setup(tube, data_dir / tube.fcs, settings)
    check_compensation(template.strategy, opened.compensation, where=where, panel=tube.panel)
    check_transforms(data_strategy, template.strategy, where=where, panel=tube.panel)
    labels = opened.resolved.marker_of
    return template, compare_gates(data_strategy, template.strategy, where=where, tube=tube.tube, labels=labels)


def _drawable(g, how: str) -> None:
    """Let the gating plots draw the reviewed gates: checked to use the panel's transforms, their
    coordinates are on the plots' scale; their channels go by the panel's marker names."""
    view = getattr(g, "sample", g).view  # a streamed tube's plots show its placement sample
    marker_of = view.resolved.marker_of
    steps = {id(s): s for s in (*g.steps, *getattr(getattr(g, "sample", None), "steps", ()))}.values()
    for step in steps:
        names = tuple(marker_of.get(d.removeprefix("Comp-")) for d in step.dims)
        if step.static and all(names):
            step.dims, step.static = names, False
            step.how = {f"{n}.{side}": how for n in names for side in ("min", "max")} if step.bounds else {"": how}


def review_sample(sample_id: str, tubes: Sequence[Tube], data_dir: str | Path, settings,
                  reviewed: Sequence[ReviewedTube], sample_dir: str | Path) -> dict:
    """Gate the sample again with the reviewed tubes' workspace gates; write ``reviewed/`` under
    ``sample_dir`` (the sample's folder, holding the data-driven files) and return the record."""
    from mrdflow.sample import analyse_sample

    sample_dir, data_dir = Path(sample_dir), Path(data_dir)
    data_record = json.loads((sample_dir / SAMPLE_FILES.stage1).read_text())
    by_tube = {t.tube: t for t in tubes}
    templates: dict[str, Any] = {}
    changes: dict[str, list[GateChange]] = {}
    problems: list[dict] = []
    stamps: dict[str, dict] = {}
    for rt in reviewed:
        tube = by_tube.get(rt.tube)
        if tube is None:
            problems.append({"tube": rt.tube, "error": f"review workspace {rt.workspace}: sample {rt.ws_sample!r} "
                                                       f"names tube {rt.tube!r}, which sample {sample_id} lacks"})
            continue
        try:
            if rt.workspace not in stamps:
                stamps[rt.workspace] = {**workspace_stamp(rt.workspace), "tubes": []}
            templates[rt.tube], changes[rt.tube] = _prepare(rt, tube, data_dir, settings, sample_dir, data_record)
            stamps[rt.workspace]["tubes"].append(rt.tube)
        except (MrdflowError, OSError) as e:
            log.error("%s/%s: %s", sample_id, rt.tube, e)
            problems.append({"tube": rt.tube, "error": str(e)})
    data_counts = _data_counts(sample_dir / SAMPLE_FILES.gating)
    data_tubes = data_record.get("tubes", {})
    resolved: list[dict] = []
    done: list[GateChange] = []

    def on_gated(tube: Tube, g, qc: dict) -> None:
        if tube.tube not in templates:
            return
        before = data_tubes.get(tube.tube, {})
        for key in _KEPT_QC:  # what a static gating cannot know: the data-driven run's
            if key in before:
                qc[key] = before[key]
        _drawable(g, f"reviewed in {Path(by_workspace[tube.tube]).name}")
        resolved.extend({"tube": tube.tube, **r} for r in before.get("gate_review", []))
        qc["gate_review"] = []  # the reviewer has looked at this tube's gates
        for c in changes[tube.tube]:
            done.append(GateChange(c.tube, c.gate, c.path, c.change, c.data, c.reviewed,
                                   _count(data_counts, tube.tube, c), g.count(tuple(c.path.split("/")))))

    def annotate(record: dict) -> None:
        record["review"] = {
            "data_stage1": SAMPLE_FILES.stage1,
            "workspaces": [s for s in stamps.values() if s["tubes"]],
            "changes": [c.as_dict() for c in done],
            "resolved": resolved,
            "problems": problems,
        }
        for name in ("pc_events",):  # read by finish_sample relative to the sample's folder
            if record.get(name):
                record[name] = f"{REVIEWED_DIR}/{record[name]}"

    by_workspace = {rt.tube: rt.workspace for rt in reviewed}
    out = sample_dir / REVIEWED_DIR
    return analyse_sample(sample_id, tubes, data_dir, settings, out, templates=templates, on_gated=on_gated,
                          annotate=annotate)
