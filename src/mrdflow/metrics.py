"""``metrics.json``: the contract between the sample stage and the cohort stage.

Each sample's ``results/samples/<sample_id>/metrics.json`` is written by
:func:`mrdflow.sample.finish_sample` (rule ``sample_metrics``) through :func:`write_metrics` and read
by the cohort (:func:`mrdflow.cohort.load_metrics`) through :func:`read_metrics`. Both check it
against ``workflow/schemas/metrics.schema.yaml``, which describes every field; a file that breaks it
fails with a :class:`MetricsError` naming the file and the field.

:class:`SampleMetrics` is the typed form: the specimen's identity and status, the per-tube errors
(:class:`TubeError`) and QC (:class:`TubeQC`, with each placed bound's evidence and the gates
placement was unsure of, :class:`GateReview`), the read-outs resting on unsure gates
(:class:`ReviewItem`), and the read-out sections: ``pc``
(:class:`PCMetrics`), ``mrd`` (:class:`MRDMetrics`), ``nk`` and ``cart`` (the mappings of
:class:`mrdflow.sample.NKMetrics` / :class:`mrdflow.sample.CARTMetrics`, checked by the schema).
Its :meth:`SampleMetrics.as_dict` gives the JSON object with its keys in the file's order, so a file
read and written again is byte-identical.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mrdflow.atomic import atomic_open
from mrdflow.errors import MrdflowError

__all__ = [
    "GateReview",
    "MRDCall",
    "MRDMetrics",
    "MetricsError",
    "PCMetrics",
    "ReviewItem",
    "SampleMetrics",
    "TubeError",
    "TubeQC",
    "flatten_metrics",
    "json_default",
    "read_metrics",
    "validate_metrics",
    "write_metrics",
]


class MetricsError(MrdflowError):
    """A metrics.json breaks the schema (names the file, the field and the cause)."""


@dataclass(frozen=True)
class TubeError:
    """A tube that could not be analysed: its name and the cause (naming the file)."""

    tube: str
    error: str


@dataclass(frozen=True)
class GateReview:
    """A gate placement was unsure of, and why (one line naming the gate and the cause)."""

    gate: str
    reason: str

    def as_dict(self) -> dict:
        return {"gate": self.gate, "reason": self.reason}


@dataclass(frozen=True)
class ReviewItem:
    """A read-out (e.g. ``PC %``, ``MRD call``) that rests on an unsure gate of a tube: its value is
    reported, marked for review; ``reason`` is the gate's."""

    readout: str
    gate: str
    tube: str
    reason: str

    def as_dict(self) -> dict:
        return {"readout": self.readout, "gate": self.gate, "tube": self.tube, "reason": self.reason}


@dataclass(frozen=True)
class TubeQC:
    """One gated tube's panel and pre-analytical QC.

    events / time_ok / singlets: events in the file, kept by time (flow-rate) QC, single cells.
    time_removed_pct: % of events removed by time QC; time_segments: the removed [start, end]
    ranges in the file's Time units; time_reasons: why each was removed. flow_rate_failed: time QC
    removed more than allowed. nonfinite_events: events with NaN/inf values. gating_source: where
    the tube's gates came from: ``data`` (placed from its events), ``reviewed`` (a reviewer's FlowJo
    workspace, config ``review.workspaces``) or ``template`` (a static template such as the panel's
    FlowJo workspace); None (absent) in files written before it was recorded. placement_events: only
    for a streamed tube, the events its gates were placed on (absent from the file otherwise).
    placement_candidates: only for a streamed tube with a rare gate (the PC gate): ``placed_on``
    ("sample and candidates", or "sample" with ``why``), ``candidates`` (events of the tube in its
    candidate region) and ``placement_events`` (the events it was placed on).
    gates: per placed gate, each placed bound's evidence (gate id -> bound key such as ``CD38.min``
    -> the fields of :class:`mrdflow.gating.BoundEvidence`: method, value, window, distance to the
    window's edges, valley depth or prominence, density at the cut relative to the parent's peak,
    fallback, sure, reason). gate_review: the gates placement was unsure of. Both None (absent
    from the file) in files written before placement recorded them.
    """

    panel: str
    role: str
    fcs: str
    events: int
    time_ok: int
    singlets: int
    time_removed_pct: float
    time_segments: tuple[tuple[float, float], ...]
    time_reasons: tuple[str, ...]
    flow_rate_failed: bool
    nonfinite_events: int
    placement_events: int | None = None
    placement_candidates: Mapping[str, Any] | None = None
    gates: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
    gate_review: tuple[GateReview, ...] | None = None
    gating_source: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TubeQC:
        kw = dict(d)
        kw["time_segments"] = tuple(tuple(s) for s in kw["time_segments"])
        kw["time_reasons"] = tuple(kw["time_reasons"])
        if "gates" in kw:
            kw["gates"] = {g: {b: dict(e) for b, e in bounds.items()} for g, bounds in kw["gates"].items()}
        if "gate_review" in kw:
            kw["gate_review"] = tuple(GateReview(r["gate"], r["reason"]) for r in kw["gate_review"])
        return cls(**kw)

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["time_segments"] = [list(s) for s in self.time_segments]
        d["time_reasons"] = list(self.time_reasons)
        if self.placement_events is None:
            del d["placement_events"]
        for key in ("placement_candidates", "gates", "gate_review", "gating_source"):
            if d[key] is None:
                del d[key]
        if self.gates is not None:
            d["gates"] = {g: {b: dict(e) for b, e in bounds.items()} for g, bounds in self.gates.items()}
        if self.gate_review is not None:
            d["gate_review"] = [r.as_dict() for r in self.gate_review]
        return d


@dataclass(frozen=True)
class PCMetrics:
    """Plasma cells of a marrow sample's tubes, pooled (counts are events, percentages 0-100).

    The aberrant counts need the cohort PC model and are None without it; so are percentages of
    zero cells. aberrant_light_chain: ``kappa``, ``lambda``, ``polytypic`` or ``""`` (no κ/λ
    events); aberrant_by_tube: aberrant PC events per tube. review_needed: a gate these counts rest
    on was unsure (the values stay, marked); review_reason: which gate of which tube, and why (both
    None, absent from the file, in files written before gate review existed).
    """

    n_nucleated: int
    n_pc: int
    pc_pct: float | None
    n_aberrant_pc: int | None
    aberrant_pc_pct: float | None
    n_normal_pc: int | None
    aberrant_pct_of_pc: float | None
    pc_kappa: int
    pc_lambda: int
    pc_kappa_lambda_ratio: float | None
    aberrant_light_chain: str
    aberrant_by_tube: Mapping[str, int]
    review_needed: bool | None = None
    review_reason: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PCMetrics:
        return cls(**{**d, "aberrant_by_tube": dict(d["aberrant_by_tube"])})

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["aberrant_by_tube"] = dict(self.aberrant_by_tube)
        return _drop_unrecorded(d)


@dataclass(frozen=True)
class MRDCall:
    """The call's figures when the cohort PC model ran (see :class:`mrdflow.sample.MRDResult`).

    mrd_level: aberrant PCs / nucleated cells (fraction; None below LOD); n_nucleated /
    n_aberrant_pc: events pooled over tubes_used; sensitivity: LOD / nucleated cells (fraction);
    depth: the decade reached (e.g. 1e-5) or None; quantifiable: aberrant events ≥ LLOQ.
    """

    mrd_level: float | None
    n_nucleated: int
    n_aberrant_pc: int
    sensitivity: float | None
    depth: float | None
    quantifiable: bool
    tubes_used: tuple[str, ...]

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["tubes_used"] = list(self.tubes_used)
        return d


@dataclass(frozen=True)
class MRDMetrics:
    """The MRD section: the status and its reason, the call's figures (``call``; None without the
    cohort PC model, when the status is ``not_evaluable``) and the hemodilution flag with the
    marrow-only populations as % of nucleated cells (empty when tube 1 was not analysed).
    review_needed: a gate the call rests on was unsure (the call stands, marked); review_reason:
    which gate of which tube, and why (both None, absent from the file, in files written before
    gate review existed)."""

    mrd_status: str
    mrd_reason: str
    hemodilution: bool
    hemodilution_reason: str
    hemodilution_pct: Mapping[str, float]
    call: MRDCall | None = None
    review_needed: bool | None = None
    review_reason: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MRDMetrics:
        call = None
        if "mrd_level" in d:
            kw = {f.name: d[f.name] for f in fields(MRDCall)}
            call = MRDCall(**{**kw, "tubes_used": tuple(kw["tubes_used"])})
        return cls(d["mrd_status"], d["mrd_reason"], d["hemodilution"], d["hemodilution_reason"],
                   dict(d["hemodilution_pct"]), call, d.get("review_needed"), d.get("review_reason"))

    def as_dict(self) -> dict:
        d: dict[str, Any] = _drop_unrecorded({"mrd_status": self.mrd_status, "mrd_reason": self.mrd_reason,
                                              "review_needed": self.review_needed,
                                              "review_reason": self.review_reason})
        if self.call is not None:
            d.update(self.call.as_dict())
        d["hemodilution"] = self.hemodilution
        d["hemodilution_reason"] = self.hemodilution_reason
        d["hemodilution_pct"] = dict(self.hemodilution_pct)
        return d


@dataclass(frozen=True)
class SampleMetrics:
    """One specimen draw's ``metrics.json``.

    Identity from the sample sheet (``day``: days since ``infusion``); status ``ok``, ``review``
    (every tube usable, but read-outs rest on unsure gates: ``review_needed``), ``partial`` (some
    tubes in ``errors``) or ``failed``; ``review_needed``: the read-outs on unsure gates (also when
    the status is ``partial``; None, absent from the file, in files written before gate review
    existed); ``tubes``: QC per gated tube. The read-out sections are None when
    the sample has no usable tube whose panel feeds them. gating_source: ``reviewed`` when any tube's
    gates came from a reviewer's workspace, else ``template`` when any came from a static template,
    else ``data``. review: the sample's review state and audit (:mod:`mrdflow.review`; the schema's
    ``review``). Both None (absent) in files written before review existed.
    """

    sample_id: str
    patient_id: str
    specimen: str
    visit: str
    day: int
    infusion: int
    status: str
    errors: tuple[TubeError, ...] = ()
    review_needed: tuple[ReviewItem, ...] | None = None
    tubes: Mapping[str, TubeQC] = field(default_factory=dict)
    nk: Mapping[str, Any] | None = None
    cart: Mapping[str, Any] | None = None
    pc: PCMetrics | None = None
    mrd: MRDMetrics | None = None
    gating_source: str | None = None
    review: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampleMetrics:
        """The typed form of a (schema-valid) metrics.json object."""
        ident = {k: d[k] for k in ("sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status")}
        return cls(
            **ident,
            errors=tuple(TubeError(e["tube"], e["error"]) for e in d["errors"]),
            review_needed=(tuple(ReviewItem(r["readout"], r["gate"], r["tube"], r["reason"])
                                 for r in d["review_needed"]) if "review_needed" in d else None),
            tubes={t: TubeQC.from_dict(q) for t, q in d["tubes"].items()},
            nk=dict(d["nk"]) if "nk" in d else None,
            cart=dict(d["cart"]) if "cart" in d else None,
            pc=PCMetrics.from_dict(d["pc"]) if "pc" in d else None,
            mrd=MRDMetrics.from_dict(d["mrd"]) if "mrd" in d else None,
            gating_source=d.get("gating_source"),
            review=dict(d["review"]) if "review" in d else None,
        )

    def as_dict(self) -> dict:
        """The JSON object, keys in the file's order; absent sections left out."""
        d: dict[str, Any] = {k: getattr(self, k) for k in
                             ("sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status")}
        d["errors"] = [{"tube": e.tube, "error": e.error} for e in self.errors]
        if self.review_needed is not None:
            d["review_needed"] = [r.as_dict() for r in self.review_needed]
        d["tubes"] = {t: q.as_dict() for t, q in self.tubes.items()}
        for key in ("nk", "cart"):
            section = getattr(self, key)
            if section is not None:
                d[key] = dict(section)
        if self.pc is not None:
            d["pc"] = self.pc.as_dict()
        if self.mrd is not None:
            d["mrd"] = self.mrd.as_dict()
        if self.gating_source is not None:
            d["gating_source"] = self.gating_source
        if self.review is not None:
            d["review"] = dict(self.review)
        return d


def _drop_unrecorded(d: dict) -> dict:
    """``d`` without ``review_needed``/``review_reason`` when they are None: a file written before
    gate review existed, read and written again byte for byte."""
    for key in ("review_needed", "review_reason"):
        if d[key] is None:
            del d[key]
    return d


@functools.cache
def _schema() -> dict:
    from mrdflow.config import load_schema

    return load_schema("metrics")


def validate_metrics(obj: Any, source: str = "metrics.json") -> None:
    """Check a metrics.json object against ``metrics.schema.yaml``; a :class:`MetricsError` lists
    every problem as ``<source>: <dotted.field>: <cause>``."""
    from mrdflow.config import schema_messages

    lines = schema_messages(_schema(), obj, source)
    if lines:
        raise MetricsError("metrics.json breaks workflow/schemas/metrics.schema.yaml:\n  " + "\n  ".join(lines))


def json_default(o: Any) -> Any:
    """JSON form of numpy scalars and arrays and of paths (``default=`` of :func:`json.dump`)."""
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_metrics(path: str | Path, metrics: SampleMetrics) -> dict:
    """Check ``metrics`` against the schema and write it to ``path`` atomically (one-space indent,
    NaN written as ``NaN``); returns the JSON object written."""
    obj = metrics.as_dict()
    text = json.dumps(obj, indent=1, default=json_default, allow_nan=True)
    validate_metrics(json.loads(text), str(path))  # what a reader will see
    with atomic_open(Path(path), "w") as fh:
        fh.write(text)
    return obj


def read_metrics(path: str | Path) -> SampleMetrics:
    """Read one metrics.json and check it against the schema."""
    path = Path(path)
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise MetricsError(f"{path}: metrics file not found") from None
    except json.JSONDecodeError as e:
        raise MetricsError(f"{path}: not valid JSON ({e})") from None
    validate_metrics(obj, str(path))
    return SampleMetrics.from_dict(obj)


def flatten_metrics(m: Mapping, prefix: str = "") -> dict:
    """One flat row of a metrics.json object for the cohort table (nested keys joined by '_';
    lists joined by ';'; ``errors`` as "tube: error | ..."; ``time_qc_flags`` as "tube:segments;...";
    ``review_needed`` as "read-out (tube gate: reason) | ..."; ``gate_review`` as "tube:gate;...";
    ``review`` as the columns of :func:`_flatten_review`)."""
    out: dict[str, Any] = {}
    for k, v in m.items():
        if not prefix and k in ("tubes", "errors", "review_needed", "review"):
            continue
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, prefix=f"{key}_"))
        elif isinstance(v, (list, tuple)):
            out[key] = ";".join(map(str, v))
        else:
            out[key] = v
    if not prefix:
        out["errors"] = " | ".join(f"{e['tube']}: {e['error']}" for e in m.get("errors", []))
        tubes = m.get("tubes") or {}
        out["time_qc_flags"] = ";".join(f"{t}:{len(q.get('time_segments', []))}" for t, q in tubes.items()
                                        if q.get("time_segments"))
        out["review_needed"] = " | ".join(f"{r['readout']} ({r['tube']} {r['gate']}: {r['reason']})"
                                          for r in m.get("review_needed", []))
        out["gate_review"] = ";".join(f"{t}:{r['gate']}" for t, q in tubes.items() for r in q.get("gate_review", []))
        out.update(_flatten_review(m.get("review")))
    return out


def _flatten_review(review: Mapping | None) -> dict:
    """The cohort table's review columns: state; changed gates as "tube:gate;..."; the
    workspaces' paths; problems as "tube: error | ..."; settled flags as "tube:gate;..." (the
    coordinates and read-outs before and after are in results/review/changes.tsv)."""
    if review is None:
        return {}
    return {
        "review_state": review["state"],
        "review_changes": ";".join(f"{c['tube']}:{c['gate']}" for c in review.get("changes", [])),
        "review_workspaces": ";".join(w["path"] for w in review.get("workspaces", [])),
        "review_problems": " | ".join(f"{p['tube']}: {p['error']}" for p in review.get("problems", [])),
        "review_resolved": ";".join(f"{r['tube']}:{r['gate']}" for r in review.get("resolved", [])),
    }
