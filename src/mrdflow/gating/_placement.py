"""Placing a template's gates on one tube: the table of gate placers and the walk over the template.

:class:`Placement` visits the template's gates parents first and builds the per-sample strategy
(:class:`~mrdflow.gating._model.Strategy`: no FlowKit in a sample job). A gate whose rule names a
gate-level method (``method: time_qc`` in ``<panel>.yaml``) is placed by that entry of
:data:`GATE_PLACERS`; any other gate by the entry for its kind
(``rectangle``: each bound by its :data:`~mrdflow.gating._bounds.BOUND_METHODS` rule, ``polygon``,
``boolean``). A placer adds the per-sample gate(s), each with its :class:`GateStep` and its
placement mask. To add a gate-level method, write a placer (``placer(placement, gate)``) and add
it to :data:`GATE_PLACERS` under the name a template's ``method:`` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mrdflow.gating._bounds import place_bound
from mrdflow.gating._compile import combine_boolean, points_in_polygon
from mrdflow.gating._model import BooleanGate, Dimension, PolygonGate, RectangleGate, Strategy
from mrdflow.gating._qc import QCSettings, singlet_gate, time_qc
from mrdflow.gating._result import GateStep, TubeGating
from mrdflow.gating._rules import GateRule, GatingError
from mrdflow.gating._transforms import make_transform
from mrdflow.gating._view import TubeView

if TYPE_CHECKING:
    from mrdflow.gating._template import GatingTemplate

__all__ = ["GATE_PLACERS", "Placement", "TemplateGate", "gate_methods"]

FL_XFORM = "logicle"
SCATTER_XFORM = "scatter"
ROOT = "root"


@dataclass(frozen=True)
class TemplateGate:
    """One template gate to place: ``gate`` as drawn (:mod:`~mrdflow.gating._model` gate, marker-named dimensions,
    template coordinates in gate units), its ``parent`` gate id (None: all events), the parent's
    path in the per-sample strategy and its placement ``rule``."""

    gate_id: str
    gate: Any
    parent: str | None
    parent_path: tuple[str, ...]
    rule: GateRule

    @property
    def dims(self) -> list[str]:
        """The gate's template dimensions (marker names)."""
        return [d.id for d in self.gate.dimensions]


class Placement:
    """Walks a template and builds the per-sample strategy; masks here are for placement only.

    ``events``: what placement needs from every event of the tube (Time neighbours of the QC
    edges, the top of the singlet wedge): the view itself, or a streamed pass when the view is a
    placement subsample. ``fmo``: the gated FMO control tube of the same sample.
    """

    def __init__(self, template: GatingTemplate, view: TubeView, qc_settings: QCSettings,
                 fmo: TubeGating | None = None, events: AllEvents | None = None):
        self.template = template
        self.view = view
        self.events = events if events is not None else _ViewEvents(view)
        self.qc_settings = qc_settings
        self.fmo = fmo
        self.masks: dict[str, np.ndarray] = {}
        self.steps: list[GateStep] = []
        self.qc: dict[str, Any] = {}
        self.strategy = Strategy()
        self.strategy.add_transform(FL_XFORM, make_transform(view.transform_specs["fluorescence"]))
        self.strategy.add_transform(SCATTER_XFORM, make_transform(view.transform_specs["scatter"]))
        self.paths: dict[str, tuple[str, ...]] = {}
        #: None, or which events of ``view`` are a uniform sample of the tube (the rest: every
        #: candidate of a rare gate, see mrdflow.gating._candidates)
        self.uniform: np.ndarray | None = None

    def place(self) -> None:
        """Place every template gate, parents (and gates a rule refers to) first."""
        for gid, tpath in self.template.gate_order():
            tgate = self.template.strategy.get_gate(gid, gate_path=tpath)
            parent = tpath[-1] if len(tpath) > 1 else None
            parent_path = self.paths[parent] if parent else (ROOT,)
            gate = TemplateGate(gid, tgate, parent, parent_path, self.template.rules.get(gid, GateRule(gid, "fixed")))
            self._placer_for(gate)(self, gate)

    def _placer_for(self, gate: TemplateGate) -> GatePlacer:
        if gate.rule.method in gate_methods():
            return GATE_PLACERS[gate.rule.method]
        kind = _KINDS.get(gate.gate.gate_type)
        if kind is not None:
            return GATE_PLACERS[kind]
        raise GatingError(f"{self.template.source}: gate {gate.gate_id!r}: {type(gate.gate).__name__} "
                          "is not supported in templates")

    def dimension(self, dim: str, rmin=None, rmax=None) -> Dimension:
        """A per-sample gate dimension: the file's $PnN, the config transform, compensation "FCS"
        for fluorescence (when the tube is compensated); ``rmin``/``rmax`` in gate units."""
        kind = self.view.kind(dim)
        if kind == "fluorescence":
            comp = "FCS" if self.view.compensation is not None else "uncompensated"
            return Dimension(self.view.pnn(dim), comp, FL_XFORM, rmin, rmax)
        if kind == "scatter":
            return Dimension(self.view.pnn(dim), "uncompensated", SCATTER_XFORM, rmin, rmax)
        return Dimension(self.view.pnn(dim), "uncompensated", None, rmin, rmax)

    def parent_mask(self, parent: str | None) -> np.ndarray:
        """The events of gate ``parent`` placed so far (None: every event)."""
        return self.masks[parent] if parent else np.ones(self.view.n, bool)

    def add(self, gate, parent_path: tuple[str, ...], step: GateStep, mask: np.ndarray) -> None:
        """Add a placed gate under ``parent_path``, with its step and placement mask."""
        self.strategy.add_gate(gate, gate_path=parent_path)
        self.paths[step.gate_id] = parent_path + (step.gate_id,)
        self.masks[step.gate_id] = mask
        step.count = int(mask.sum())
        step.parent_count = int(self.parent_mask(step.parent).sum())
        self.steps.append(step)

    def parent_of(self, gid: str) -> str | None:
        """The parent gate id of template gate ``gid`` (None at the root)."""
        for g, path in self.template.gate_order():
            if g == gid:
                return path[-1] if len(path) > 1 else None
        return None


#: A gate placer: adds the placed gate(s) of one template gate to the placement.
GatePlacer = Callable[[Placement, TemplateGate], None]


# ---------------------------------------------------------------------------------------------
# The placers
# ---------------------------------------------------------------------------------------------

def _place_rectangle(p: Placement, g: TemplateGate) -> None:
    """The template rectangle, each bound with a rule placed by its bound method."""
    gid, tgate, parent, parent_path, rule = g.gate_id, g.gate, g.parent, g.parent_path, g.rule
    pmask = p.parent_mask(parent)
    bounds: dict[str, tuple[float | None, float | None]] = {}
    how: dict[str, str] = {}
    evidence: dict = {}
    rechecks: dict = {}
    dims = g.dims
    for d in tgate.dimensions:
        bounds[d.id] = (d.min, d.max)
    for key, br in rule.bounds.items():
        dim, side = key.rsplit(".", 1)
        if dim not in bounds:
            raise GatingError(f"{p.template.source}: gate {gid!r} has no dimension {dim!r} (has {dims})")
        placed = place_bound(p, gid, dim, side, br, pmask, bounds)
        value = placed.value
        lo, hi = bounds[dim]
        bounds[dim] = (value, hi) if side == "min" else (lo, value)
        how[key] = placed.note
        evidence[key] = placed.evidence
        if placed.recheck is not None:
            rechecks[key] = placed.recheck
    for key, recheck in rechecks.items():  # verdicts that depend on the whole gate
        evidence[key] = recheck(bounds)
    shared = {dim: p.view.shares(dim) for dim in bounds if p.view.shares(dim)}
    if shared:
        how[""] = "; ".join(f"{dim}: per-event minimum of {', '.join(s)} (no channel of its own)"
                            for dim, s in shared.items())
    mask = _within(p.view, pmask, bounds)
    unsure = [f"{key} {ev.reason}" for key, ev in evidence.items() if not ev.sure]
    step = GateStep(gid, parent, "rect", tuple(dims), bounds=bounds, how=how, plot_dims=tuple(dims),
                    evidence=evidence, review=f"{gid}: {'; '.join(unsure)}" if unsure else None)
    _add_rectangle(p, step, parent_path, mask)


def _add_rectangle(p: Placement, step: GateStep, parent_path: tuple[str, ...], mask: np.ndarray) -> None:
    """Add a placed rectangle (``step.bounds`` in template dimensions) to the strategy.

    A dimension the panel reads on other markers' channels (``shares``: its values are the
    per-event minimum of theirs) has no channel to name, and Gating-ML 2.0 has no derived
    dimension for a minimum. Its bounds are written on the shared channels instead, exactly:
    ``min >= lo`` holds when every shared channel is ``>= lo``, so a min bound becomes one more
    dimension of the same RectangleGate per shared channel, each with the same threshold (a
    rectangle is the AND of its ranges); ``min < hi`` holds when not every shared channel is
    ``>= hi``, so a max bound becomes a RectangleGate ``<gate>_<dim>_high`` (every shared channel
    ``>= hi``) used as a complement: the gate is then a BooleanGate, the AND of ``<gate>_<channels>``
    (the rectangle's other ranges) and NOT ``<gate>_<dim>_high`` (those two are steps of their
    own). One shared channel is just that channel. The step keeps the template's dimensions
    (plots and captions show the minimum)."""
    gid, parent = step.gate_id, step.parent
    channels: dict[str, tuple[float | None, float | None]] = {}  # dimension with a channel -> range
    highs: list[tuple[str, float]] = []  # (dimension on several channels, its max)
    for dim, (lo, hi) in step.bounds.items():
        shares = p.view.shares(dim)
        if len(shares) > 1 and hi is not None:
            highs.append((dim, hi))
            hi = None
        if shares and lo is None and hi is None:
            continue
        for ch in shares or (dim,):
            clo, chi = channels.get(ch, (None, None))
            channels[ch] = (either(max, clo, lo), either(min, chi, hi))

    def rectangle(rid: str, ranges: dict[str, tuple[float | None, float | None]]):
        return RectangleGate(rid, tuple(p.dimension(d, lo, hi) for d, (lo, hi) in ranges.items()))

    if not highs:
        p.add(rectangle(gid, channels), parent_path, step, mask)
        return
    pmask = p.parent_mask(parent)
    taken = {g for g, _ in p.template.strategy.get_gate_ids()} | set(p.paths)
    # (gate id, its ranges on channels, the step's bounds, note, used as a complement)
    parts = [(f"{gid}_{'_'.join(channels)}", channels, dict(channels),
              f"part of {gid}: its ranges on {', '.join(channels)}", False)] if channels else []
    for dim, hi in highs:
        shares = p.view.shares(dim)
        parts.append((f"{gid}_{dim}_high", {s: (hi, None) for s in shares}, {dim: (hi, None)},
                      f"left out of {gid}: {dim} >= {hi:.3f}, i.e. every one of {', '.join(shares)} >= {hi:.3f}",
                      True))
    refs = []
    for rid, ranges, bounds, note, complement in parts:
        if rid in taken:
            raise GatingError(f"{p.template.source}: gate {gid!r}: its part {rid!r} would reuse a gate id")
        part = GateStep(rid, parent, "rect", tuple(bounds), bounds=bounds, how={"": note}, plot_dims=tuple(bounds))
        p.add(rectangle(rid, ranges), parent_path, part, _within(p.view, pmask, bounds))
        refs.append({"ref": rid, "path": parent_path, "complement": complement})
    if len(refs) == 1:  # only a max on shared channels: NOT (every channel >= max)
        gate = BooleanGate(gid, "not", ({**refs[0], "complement": False},))
    else:
        gate = BooleanGate(gid, "and", tuple(refs))
    p.add(gate, parent_path, step, mask)


def _within(view: TubeView, mask: np.ndarray, ranges: dict[str, tuple[float | None, float | None]]) -> np.ndarray:
    """The events of ``mask`` inside every ``ranges`` (dimension -> [min, max), gate units)."""
    out = mask.copy()
    for dim, (lo, hi) in ranges.items():
        v = view.values(dim)
        if lo is not None:
            out &= v >= lo
        if hi is not None:
            out &= v < hi
    return out


def _place_polygon(p: Placement, g: TemplateGate) -> None:
    """The template polygon as drawn."""
    gid, tgate, parent, parent_path = g.gate_id, g.gate, g.parent, g.parent_path
    dims = g.dims
    verts = [tuple(map(float, v)) for v in tgate.vertices]
    pmask = p.parent_mask(parent)
    x = p.view.values(dims[0]).astype(np.float64)
    y = p.view.values(dims[1]).astype(np.float64)
    mask = pmask & points_in_polygon(x, y, verts)
    gate = PolygonGate(gid, tuple(p.dimension(d) for d in dims), tuple(verts))
    step = GateStep(gid, parent, "polygon", tuple(dims), vertices=verts, how={"": "fixed (template)"},
                    plot_dims=tuple(dims))
    p.add(gate, parent_path, step, mask)


def _place_boolean(p: Placement, g: TemplateGate) -> None:
    """The template boolean gate over the placed gates it references."""
    gid, tgate, parent, parent_path = g.gate_id, g.gate, g.parent, g.parent_path
    refs = [{"ref": r["ref"], "path": p.paths[r["ref"]][:-1], "complement": r.get("complement", False)}
            for r in tgate.gate_refs]
    kind = tgate.type
    m = combine_boolean(kind, [(p.masks[r["ref"]], r.get("complement", False)) for r in tgate.gate_refs])
    mask = p.parent_mask(parent) & m
    gate = BooleanGate(gid, kind, tuple(refs))
    step = GateStep(gid, parent, "boolean", (), how={"": f"{kind} of {[r['ref'] for r in refs]}"})
    p.add(gate, parent_path, step, mask)


def _place_time_qc(p: Placement, g: TemplateGate) -> None:
    """The time/flow-rate QC: a gate per flagged Time segment, and the gate excluding them."""
    gid, parent, parent_path = g.gate_id, g.parent, g.parent_path
    view = p.view
    t = view.values("Time")
    sig_dims = [d for d in ("FSC-A", "SSC-A") if d in view.resolved.index] + list(view.fluorescence)
    view.prefetch(sig_dims)
    signals = [view.values(d) for d in sig_dims]
    res = time_qc(t, signals, p.qc_settings, signal_names=sig_dims, span=p.events.time_span())
    pmask = p.parent_mask(parent)
    p.qc["time"] = {
        "segments": [list(s) for s in res.segments],
        "reasons": res.reasons,
        "removed_fraction": res.removed_fraction,
        "failed": res.removed_fraction > p.qc_settings.max_removed_fraction,
    }
    # Edges go midway between distinct event times: FlowKit reading the file scales Time in
    # float64, we in float32, so an edge must not sit within rounding distance of an event.
    if not res.segments:
        t0 = p.events.time_min()
        lo = t0 - max(1.0, abs(t0)) if t0 is not None else -1.0
        gate = RectangleGate(gid, (p.dimension("Time", lo, None),))
        mask = pmask & (t >= lo)
        step = GateStep(gid, parent, "rect", ("Time",), bounds={"Time": (lo, None)},
                        how={"Time": "no anomalous time segment"}, plot_dims=("Time", "FSC-A"))
        p.add(gate, parent_path, step, mask)
        return
    edges = p.events.between([e for seg in res.segments for e in seg])
    bad_ids = []
    for i in range(1, len(res.segments) + 1):
        s0, s1 = edges[2 * i - 2], edges[2 * i - 1]
        bid = f"{gid}_bad{i}"
        segment = RectangleGate(bid, (p.dimension("Time", s0, s1),))
        m = pmask & (t >= s0) & (t < s1)
        step = GateStep(bid, parent, "rect", ("Time",), bounds={"Time": (s0, s1)},
                        how={"Time": f"flagged: {res.reasons[i - 1]}"}, plot_dims=("Time", "FSC-A"))
        p.add(segment, parent_path, step, m)
        bad_ids.append(bid)
    if len(bad_ids) == 1:
        gate = BooleanGate(gid, "not", ({"ref": bad_ids[0], "path": parent_path, "complement": False},))
    else:
        gate = BooleanGate(gid, "and", tuple({"ref": b, "path": parent_path, "complement": True} for b in bad_ids))
    bad = np.logical_or.reduce([p.masks[b] for b in bad_ids])
    mask = pmask & ~bad
    note = "; ".join(f"[{s0:.0f}, {s1:.0f}) {r}" for (s0, s1), r in zip(res.segments, res.reasons))
    p.add(gate, parent_path, GateStep(gid, parent, "boolean", ("Time",), how={"Time": f"excluded {note}"},
                                      plot_dims=("Time", "FSC-A")), mask)


def _place_singlets(p: Placement, g: TemplateGate) -> None:
    """The FSC-A/FSC-H singlet wedge from the data's ratio."""
    gid, parent, parent_path = g.gate_id, g.parent, g.parent_path
    dims = g.dims
    if len(dims) != 2:
        raise GatingError(f"{p.template.source}: singlet gate {gid!r} needs dimensions (FSC-A, FSC-H)")
    a_dim, h_dim = dims
    pmask = p.parent_mask(parent)
    a = p.view.values(a_dim)
    h = p.view.values(h_dim)
    wedge = singlet_gate(a[pmask], h[pmask], p.qc_settings)
    top = p.events.max_value(h_dim)  # over every event: the wedge holds all of them
    h_max = top * 1.05 + 1e-6 if top is not None else 1.0
    h_min = 0.0
    verts = wedge.polygon(h_min, h_max) if wedge.ratio_hi > 0 else [(0, 0), (1e-9, 0), (1e-9, 1e-9)]
    verts = [(float(x), float(y)) for x, y in verts]
    mask = pmask & _in_polygon(a, h, verts)
    gate = PolygonGate(gid, (p.dimension(a_dim), p.dimension(h_dim)), tuple(verts))
    how = {"": f"FSC-A/FSC-H ratio in [{wedge.ratio_lo:.3f}, {wedge.ratio_hi:.3f}] (mode {wedge.mode:.3f}, "
               f"SD {wedge.sd:.3f})"}
    p.qc["singlets"] = {"ratio_lo": wedge.ratio_lo, "ratio_hi": wedge.ratio_hi, "mode": wedge.mode}
    p.add(gate, parent_path, GateStep(gid, parent, "polygon", (a_dim, h_dim), vertices=verts, how=how,
                                      plot_dims=(h_dim, a_dim)), mask)


#: Gate placers by name: gate-level methods a template rule's ``method:`` names (``time_qc``,
#: ``singlets``), and the placers of the template gate kinds (``rectangle``, ``polygon``,
#: ``boolean``) for gates whose rule is ``bounds`` or ``fixed``.
GATE_PLACERS: dict[str, GatePlacer] = {
    "time_qc": _place_time_qc,
    "singlets": _place_singlets,
    "rectangle": _place_rectangle,
    "polygon": _place_polygon,
    "boolean": _place_boolean,
}
#: The placer of each template gate kind (``gate_type``, as FlowKit names the classes).
_KINDS = {"RectangleGate": "rectangle", "PolygonGate": "polygon", "BooleanGate": "boolean"}


def gate_methods() -> list[str]:
    """The gate-level methods a rule's ``method:`` may name: every placer of :data:`GATE_PLACERS`
    that is not a gate kind's, in table order."""
    kinds = set(_KINDS.values())
    return [name for name in GATE_PLACERS if name not in kinds]


def _in_polygon(x: np.ndarray, y: np.ndarray, verts, chunk: int = 1 << 20) -> np.ndarray:
    """``points_in_polygon`` on float64 values of float32 columns, a chunk at a time (no float64
    copies of whole columns)."""
    out = np.empty(x.shape[0], bool)
    for s in range(0, x.shape[0], chunk):
        e = s + chunk
        out[s:e] = points_in_polygon(x[s:e].astype(np.float64), y[s:e].astype(np.float64), verts)
    return out


# ---------------------------------------------------------------------------------------------
# What placement needs from every event of the tube
# ---------------------------------------------------------------------------------------------

def edge_between(below: float | None, above: float | None, edge: float) -> float:
    """An edge moved midway between the nearest event values below it and at or above it (one
    side missing: a unit or the value's size beyond the other; none: the edge itself)."""
    if below is None and above is None:
        return float(edge)
    if below is None:
        return float(above) - max(1.0, abs(float(above)))
    if above is None:
        return float(below) + max(1.0, abs(float(below)))
    return 0.5 * (float(below) + float(above))


class AllEvents:
    """Facts about every event of a tube that placement needs beyond its view."""

    def time_min(self) -> float | None:
        """The smallest finite Time (s), None without one."""
        raise NotImplementedError

    def time_span(self) -> tuple[float, float] | None:
        """(first, last) finite Time (s) of the tube; None to let the time QC use its events'."""
        raise NotImplementedError

    def between(self, edges: Sequence[float]) -> list[float]:
        """Each Time edge moved midway between the event times around it (:func:`edge_between`)."""
        raise NotImplementedError

    def max_value(self, dim: str) -> float | None:
        """The largest finite value of ``dim`` in gate units, None without one."""
        raise NotImplementedError


class _ViewEvents(AllEvents):
    """The view holds every event."""

    def __init__(self, view: TubeView):
        self.view = view
        self._distinct: np.ndarray | None = None

    def _times(self) -> np.ndarray:
        if self._distinct is None:
            t = self.view.values("Time")
            self._distinct = np.unique(t[np.isfinite(t)])
        return self._distinct

    def time_min(self) -> float | None:
        d = self._times()
        return float(d[0]) if d.size else None

    def time_span(self) -> tuple[float, float] | None:
        return None  # the view holds every event: the time QC's own range is the tube's

    def between(self, edges: Sequence[float]) -> list[float]:
        d = self._times()
        out = []
        for e in edges:
            i = int(np.searchsorted(d, e))
            out.append(edge_between(float(d[i - 1]) if i > 0 else None, float(d[i]) if i < d.size else None, e))
        return out

    def max_value(self, dim: str) -> float | None:
        return finite_max(self.view.values(dim))


def either(f, a: float | None, b: float | None) -> float | None:
    """``f(a, b)`` where either may be None (not seen yet): the other one then."""
    return b if a is None else a if b is None else f(a, b)


def finite_max(v: np.ndarray, chunk: int = 1 << 20) -> float | None:
    """The largest finite value of ``v`` (None without one), a chunk at a time."""
    best = None
    for s in range(0, v.shape[0], chunk):
        part = v[s:s + chunk]
        part = part[np.isfinite(part)]
        if part.size:
            best = either(max, best, float(part.max()))
    return best
