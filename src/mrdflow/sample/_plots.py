"""Per-sample gating plots: one PNG per gating step, for a person checking where gates landed.

:func:`plot_gating` draws every step of a :class:`mrdflow.gating.TubeGating` as
``<NN>_<gate_id>.png`` (``NN`` = the step's 1-based position in ``TubeGating.steps``):

* 2-D rectangle and polygon gates: a density plot (2-D histogram, log colour scale, white where a
  bin is empty) of the step's *parent* events on its plot axes, with the gate outlined (a
  rectangle's open sides run off the plot edge). A rectangle with more than two dimensions is drawn
  on its first two; the other bounds are listed in the caption.
* 1-D rectangle gates: a histogram of the parent events with the threshold(s) and the gated range
  shaded.
* Time QC (steps on ``Time``: the ``<id>_badN`` segment gates and the ``<id>`` gate that excludes
  them): the event rate (events/s) above a Time vs FSC-A density, excluded segments shaded red; a
  segment's own plot highlights it.
* Other boolean gates: their operands drawn on the operands' axes over the boolean gate's parent
  events (dashed outlines) with the combined region filled; a boolean gate whose operands cannot be
  drawn (nested booleans) gets no file.

Every plot's headline gives the gate's event count and its percentage of the parent, and the
caption says where each bound sits and how it was placed (``GateStep.how``). Axis ranges are fixed
per axis type (fluorescence -0.05..1.05, scatter 0..1.05) so samples compare at a glance.

Rendering uses Agg figures that pyplot never sees (no display, nothing to close, no memory held
between plots); files are written atomically and carry no time stamp or version text, so the same
gating gives byte-identical PNGs. At most ``max_events`` parent events are binned (a seeded,
order-preserving random subsample); the rate trace always counts every event. The drawing pieces
(frame, density raster, legend, caption text) are in :mod:`mrdflow.sample._plot_panels`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.patches import Polygon, Rectangle

from mrdflow.atomic import atomic_path
from mrdflow.gating import GateStep, TubeGating, combine_boolean, points_in_polygon
from mrdflow.sample._outputs import plot_file_name
from mrdflow.sample._plot_panels import (
    _RC,
    BINS_2D,
    GATE_COLOR,
    _bound_text,
    _density,
    _emptiest_corner,
    _fmt,
    _Frame,
    _Frames,
    _gate_legend,
    _headline,
    _hist1d,
    _open,
    _pct,
    _pretty_reasons,
    _profile,
    _rect_caption,
    _sample_note,
)

__all__ = ["plot_gating"]

FL_LIMITS = (-0.05, 1.05)
SCATTER_LIMITS = (0.0, 1.05)
TIME_BINS = 240        # time bins of the rate trace and the Time vs FSC-A density
SEED = 596             # subsampling seed (mixed with the parent gate's name)

EXCLUDED_COLOR = "#d62728"
OPERAND_COLOR = "#444444"

_BAD_RE = re.compile(r"^(?P<group>.+)_bad(?P<n>\d+)$")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def plot_gating(g: TubeGating, outdir: str | Path, *, title: str, max_events: int = 10**6,
                dpi: int = 110) -> list[Path]:
    """Write one PNG per gating step of ``g`` into ``outdir``; return the paths, in step order.

    ``title`` heads every plot (the sample and tube). ``max_events``: at most this many parent
    events go into a density plot or histogram (a deterministic, seeded subsample beyond that).
    A boolean gate whose operands cannot be drawn, and gates applied as drawn in a FlowJo workspace
    (their coordinates use FlowJo's transforms), get no file.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(g, int(max_events))
    paths: list[Path] = []
    with matplotlib.rc_context(_RC):
        for i, step in enumerate(g.steps, start=1):
            if step.static:  # a FlowJo gate as drawn: its coordinates use FlowJo's transforms
                continue
            frame = _figure_for(ctx, step, title)
            if frame is None:
                continue
            path = outdir / plot_file_name(i, step.gate_id, len(g.steps))
            with atomic_path(path) as tmp:
                frame.save(tmp, dpi)
            paths.append(path)  # the figure is dropped here (no pyplot registry holds it)
    return paths


# ---------------------------------------------------------------------------------------------
# Data access
# ---------------------------------------------------------------------------------------------

class _Context:
    """Per-call caches: parent masks and their (subsampled) event indices."""

    def __init__(self, g: TubeGating, max_events: int):
        self.g = g
        self.view = g.view
        self.max_events = max(1, max_events)
        self.steps = {s.gate_id: s for s in g.steps}
        self._index: dict[str | None, tuple[np.ndarray | None, int]] = {}
        self.frame = _Frames()  # one reused figure per layout, for this call only

    def parent_index(self, parent: str | None) -> tuple[np.ndarray | None, int]:
        """(event indices to plot or None = every event, number of parent events)."""
        if parent in self._index:
            return self._index[parent]
        n = self.view.n
        if parent is None:
            idx, total = None, n
            if n > self.max_events:
                idx = self._subsample(np.arange(n), parent)
        else:
            idx = np.flatnonzero(self.g.mask(parent))
            total = int(idx.size)
            if total > self.max_events:
                idx = self._subsample(idx, parent)
        self._index[parent] = (idx, total)
        return idx, total

    def _subsample(self, idx: np.ndarray, parent: str | None) -> np.ndarray:
        rng = np.random.default_rng([SEED, zlib.crc32((parent or "").encode())])
        pick = rng.choice(idx.size, size=self.max_events, replace=False)
        pick.sort()
        return idx[pick]

    def values(self, dim: str, idx: np.ndarray | None) -> np.ndarray:
        v = self.view.values(dim)
        return v if idx is None else v[idx]

    def all_parent_values(self, dim: str, parent: str | None) -> np.ndarray:
        v = self.view.values(dim)
        return v if parent is None else v[self.g.mask(parent)]

    def has_dim(self, dim: str) -> bool:
        try:
            self.view.values(dim)
        except Exception:
            return False
        return True

    # -- axes ---------------------------------------------------------------------------------
    def kind(self, dim: str) -> str:
        return self.view.kind(dim)

    def limits(self, dim: str) -> tuple[float, float]:
        kind = self.kind(dim)
        if kind == "fluorescence":
            return FL_LIMITS
        if kind == "scatter":
            return SCATTER_LIMITS
        t = self.view.values(dim)
        if t.size == 0:
            return (0.0, 1.0)
        lo, hi = float(np.nanmin(t)), float(np.nanmax(t))
        lo = min(0.0, lo)
        return (lo, hi if hi > lo else lo + 1.0)

    def label(self, dim: str) -> str:
        kind = self.kind(dim)
        specs = getattr(self.view, "transform_specs", {}) or {}
        if kind == "time":
            return f"{dim} (s)"
        spec = specs.get(kind, {})
        if spec.get("type", "linear") == "linear":
            return f"{dim} (/{float(spec.get('t', 262144)):g})"
        return f"{dim} ({spec['type']})"



# ---------------------------------------------------------------------------------------------
# Plot kinds
# ---------------------------------------------------------------------------------------------

def _figure_for(ctx: _Context, step: GateStep, title: str) -> _Frame | None:
    if step.dims == ("Time",) or (step.plot_dims[:1] == ("Time",) and step.kind != "polygon"):
        return _time_plot(ctx, step, title)
    if step.kind == "boolean":
        return _boolean_plot(ctx, step, title)
    dims = tuple(step.plot_dims) or tuple(step.dims)
    if step.kind == "polygon" or len(dims) >= 2:
        return _density_plot(ctx, step, title, dims[:2])
    return _histogram_plot(ctx, step, title, dims[0])


def _density_plot(ctx: _Context, step: GateStep, title: str, dims: tuple[str, str]) -> _Frame:
    xd, yd = dims
    idx, total = ctx.parent_index(step.parent)
    xlim, ylim = ctx.limits(xd), ctx.limits(yd)
    if step.kind == "polygon":
        caption = [step.how.get("", "") or "polygon (template)"]
        if len(step.dims) == 2 and set(step.dims) == {xd, yd}:
            order = (0, 1) if step.dims == (xd, yd) else (1, 0)
            verts = [(v[order[0]], v[order[1]]) for v in step.vertices]
        else:
            verts = []
            caption.append(f"Polygon on {step.dims} cannot be drawn on {dims}.")
    else:
        caption = _rect_caption(step, dims)
    caption += _sample_note(idx, total)
    frame = ctx.frame(title, _headline(step, total), caption)
    ax = frame.ax
    H = _density(frame, ax, ctx.values(xd, idx), ctx.values(yd, idx), xlim, ylim)
    _gate_legend(ax, step, total, _emptiest_corner(H))
    ax.set_xlabel(ctx.label(xd))
    ax.set_ylabel(ctx.label(yd))
    if step.kind == "polygon":
        if verts:
            ax.add_patch(Polygon(verts, closed=True, fill=False, ec=GATE_COLOR, lw=1.6, zorder=5))
    else:
        x0, x1 = _open(*step.bounds.get(xd, (None, None)), xlim)
        y0, y1 = _open(*step.bounds.get(yd, (None, None)), ylim)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=GATE_COLOR, lw=1.6, zorder=5))
    return frame


def _histogram_plot(ctx: _Context, step: GateStep, title: str, dim: str) -> _Frame:
    idx, total = ctx.parent_index(step.parent)
    lim = ctx.limits(dim)
    lo, hi = step.bounds.get(dim, (None, None))
    caption = _rect_caption(step, (dim,)) + _sample_note(idx, total)
    frame = ctx.frame(title, _headline(step, total), caption, colorbar=False)
    ax = frame.ax
    counts = _hist1d(ctx.values(dim, idx), lim)
    edges = np.linspace(lim[0], lim[1], counts.size + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    a, b = _open(lo, hi, lim)
    inside = (centres >= a) & (centres < b)
    ungated = np.where(inside, 0, counts)
    gated = np.where(inside, counts, 0)
    ax.fill_between(edges, np.append(ungated, ungated[-1]), step="post", color="#c8c8c8", lw=0)
    ax.fill_between(edges, np.append(gated, gated[-1]), step="post", color=GATE_COLOR, alpha=0.35, lw=0)
    ax.stairs(counts, edges, color="#333333", lw=0.9)
    ymax = max(1.0, float(counts.max())) * 1.12
    for v in (lo, hi):
        if v is not None:
            # a line in data coordinates: axvline's axes-fraction y makes matplotlib compare
            # transforms on every added line (~15 ms a plot, measured)
            ax.plot([v, v], [0, ymax], color=GATE_COLOR, lw=1.6, zorder=5, scalex=False, scaley=False)
            ax.text(v, ymax * 0.985, f" {_fmt(v)}", color=GATE_COLOR, fontsize=8, ha="left", va="top")
    ax.set_xlim(lim)
    ax.set_ylim(0, ymax)
    ax.set_xlabel(ctx.label(dim))
    ax.set_ylabel("events per bin")
    _gate_legend(ax, step, total, _emptiest_corner(_profile(counts, ymax)), region=True)
    return frame


def _time_segments(ctx: _Context, step: GateStep) -> tuple[str, list[tuple[str, float, float]]]:
    """(time-QC group id, [(segment gate id, start, end)]) for a Time step."""
    m = _BAD_RE.match(step.gate_id)
    group = m.group("group") if m and step.kind == "rect" else step.gate_id
    segs = []
    for s in ctx.g.steps:
        mm = _BAD_RE.match(s.gate_id)
        if mm and mm.group("group") == group and s.kind == "rect" and "Time" in s.bounds:
            lo, hi = s.bounds["Time"]
            segs.append((s.gate_id, float(lo), float(hi)))
    if not segs and step.kind == "boolean":
        qc = (ctx.g.qc or {}).get("time") or {}
        segs = [(f"{group}_bad{i}", float(a), float(b)) for i, (a, b) in enumerate(qc.get("segments") or [], 1)]
    return group, segs


def _time_plot(ctx: _Context, step: GateStep, title: str) -> _Frame:
    group, segs = _time_segments(ctx, step)
    is_bad = any(sid == step.gate_id for sid, _, _ in segs)
    idx, total = ctx.parent_index(step.parent)
    t_all = ctx.all_parent_values("Time", step.parent)
    tlim = ctx.limits("Time")
    y_dim = step.plot_dims[1] if len(step.plot_dims) > 1 and ctx.has_dim(step.plot_dims[1]) else None

    nd = 2 if tlim[1] - tlim[0] < 20 else 1

    def ts(v: float) -> str:
        return f"{v:.{nd}f}"

    parent = step.parent or "all events"
    if is_bad:
        lo, hi = step.bounds["Time"]
        headline = (f"{step.gate_id}  —  Time [{ts(lo)}, {ts(hi)}) s excluded: {step.count:,} events "
                    f"= {_pct(step.count, total)} of {parent}")
    elif segs:
        excluded = total - step.count
        headline = (f"{step.gate_id}  —  {step.count:,} of {total:,} events kept "
                    f"({_pct(step.count, total)}); {len(segs)} segment{'s' if len(segs) > 1 else ''} "
                    f"excluded ({_pct(excluded, total)})")
    else:
        headline = _headline(step, total)
    caption = [_pretty_reasons(note) for note in step.how.values()]
    if not is_bad and segs:
        caption.append("Excluded: " + ", ".join(f"{sid} [{ts(a)}, {ts(b)}) s" for sid, a, b in segs))
    qc = (ctx.g.qc or {}).get("time") or {}
    if "removed_fraction" in qc and not is_bad:
        verdict = "FAILED (too much removed)" if qc.get("failed") else "passed"
        caption.append(f"Time QC {verdict}: {100 * float(qc['removed_fraction']):.2f}% of events removed.")
    caption.append("Top: acquisition rate (all parent events, dashed = median); bottom: density of "
                   f"Time vs {y_dim or '(no FSC-A)'}; red = excluded segments.")
    caption += _sample_note(idx, total)

    frame = ctx.frame(title, headline, caption, strip=True, colorbar=y_dim is not None)
    strip, ax = frame.strip, frame.ax
    # rate trace
    edges = np.linspace(tlim[0], tlim[1], TIME_BINS + 1)
    width = (tlim[1] - tlim[0]) / TIME_BINS
    counts = _hist1d(t_all, tlim, TIME_BINS)
    rate = counts / width
    strip.stairs(rate, edges, color="#1f4e79", lw=0.9, fill=False)
    occupied = rate[counts > 0]
    if occupied.size:
        strip.axhline(float(np.median(occupied)), color="#1f4e79", lw=0.8, ls="--", alpha=0.7)
    strip.set_xlim(tlim)
    strip.set_ylim(0, max(1.0, float(rate.max())) * 1.15)
    strip.set_ylabel("events/s")
    strip.tick_params(labelbottom=False)
    # density
    if y_dim is not None:
        ylim = ctx.limits(y_dim)
        _density(frame, ax, ctx.values("Time", idx), ctx.values(y_dim, idx), tlim, ylim,
                 nx=TIME_BINS, ny=BINS_2D // 2)
        ax.set_ylabel(ctx.label(y_dim))
    else:
        ax.set_xlim(tlim)
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no FSC-A in this panel", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel(ctx.label("Time"))
    for sid, a, b in segs:
        this = sid == step.gate_id
        alpha = 0.35 if (this or not is_bad) else 0.12
        for axis in (strip, ax):
            axis.axvspan(a, b, color=EXCLUDED_COLOR, alpha=alpha, lw=0, zorder=4)
            if this:
                axis.axvline(a, color=EXCLUDED_COLOR, lw=1.4, zorder=5)
                axis.axvline(b, color=EXCLUDED_COLOR, lw=1.4, zorder=5)
        strip.text((a + b) / 2, strip.get_ylim()[1] * 0.97, sid.rsplit("_", 1)[-1], ha="center", va="top",
                   fontsize=7.5, color=EXCLUDED_COLOR, fontweight="bold", zorder=6)
    return frame


def _boolean_operands(ctx: _Context, step: GateStep) -> tuple[str, list[tuple[GateStep, bool]]] | None:
    try:
        gate = ctx.g.strategy.get_gate(step.gate_id)
    except Exception:
        return None
    kind = getattr(gate, "type", None)
    refs = getattr(gate, "gate_refs", None) or []
    ops = []
    for r in refs:
        s = ctx.steps.get(r["ref"])
        if s is None or s.kind not in ("rect", "polygon"):
            return None
        ops.append((s, bool(r.get("complement", False))))
    if kind not in ("and", "or", "not") or not ops:
        return None
    return kind, ops


def _member_grid(op: GateStep, dims: Sequence[str], grids: Sequence[np.ndarray]) -> np.ndarray:
    """Membership of grid points in an operand, projected on ``dims`` (bounds on other dims are
    ignored)."""
    shape = grids[0].shape
    if op.kind == "polygon":
        if len(dims) == 2 and set(op.dims) == set(dims):
            order = (0, 1) if tuple(op.dims) == tuple(dims) else (1, 0)
            pts = (grids[order[0]].ravel().astype(np.float64), grids[order[1]].ravel().astype(np.float64))
            return points_in_polygon(pts[0], pts[1], op.vertices).reshape(shape)
        return np.ones(shape, bool)
    m = np.ones(shape, bool)
    for d, gv in zip(dims, grids):
        lo, hi = op.bounds.get(d, (None, None))
        if lo is not None:
            m &= gv >= lo
        if hi is not None:
            m &= gv < hi
    return m


def _boolean_plot(ctx: _Context, step: GateStep, title: str) -> _Frame | None:
    spec = _boolean_operands(ctx, step)
    if spec is None:
        return None
    kind, ops = spec
    dims: list[str] = []
    for op, _ in ops:
        for d in (op.plot_dims or op.dims)[:2]:
            if d not in dims:
                dims.append(d)
    dims = dims[:2]
    if not dims:
        return None
    idx, total = ctx.parent_index(step.parent)
    lims = [ctx.limits(d) for d in dims]
    res = 400 if len(dims) == 2 else 2000
    axes1d = [np.linspace(l0, l1, res) for l0, l1 in lims]
    grids = np.meshgrid(*axes1d, indexing="xy") if len(dims) == 2 else axes1d
    region = combine_boolean(kind, [(_member_grid(op, dims, grids), comp) for op, comp in ops])
    names = [("NOT " if c else "") + op.gate_id for op, c in ops]
    expr = f" {kind.upper()} ".join(names) if kind != "not" else f"NOT {ops[0][0].gate_id}"
    caption = [f"Boolean gate: {expr}  (within {step.parent or 'all events'}); shaded = the combined region, "
               "dashed = the operand gates."]
    for op, _ in ops:
        if op.kind == "rect":
            caption.append(f"{op.gate_id}: " + ", ".join(_bound_text(d, *op.bounds[d]) for d in op.bounds)
                           + ("" if set(op.bounds) <= set(dims) else "  (bounds on other axes not drawn)"))
        else:
            caption.append(f"{op.gate_id}: polygon on {', '.join(op.dims)}")
    caption += _sample_note(idx, total)
    headline = _headline(step, total)
    if len(dims) == 2:
        frame = ctx.frame(title, headline, caption)
        ax = frame.ax
        xlim, ylim = lims
        H = _density(frame, ax, ctx.values(dims[0], idx), ctx.values(dims[1], idx), xlim, ylim)
        ax.contourf(axes1d[0], axes1d[1], region.astype(np.float32), levels=[0.5, 1.5],
                    colors=[GATE_COLOR], alpha=0.13, zorder=3)
        ax.contour(axes1d[0], axes1d[1], region.astype(np.float32), levels=[0.5], colors=[GATE_COLOR],
                   linewidths=1.6, zorder=5)
        for op, _ in ops:
            if op.kind == "rect":
                x0, x1 = _open(*op.bounds.get(dims[0], (None, None)), xlim)
                y0, y1 = _open(*op.bounds.get(dims[1], (None, None)), ylim)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=OPERAND_COLOR, lw=1.0,
                                       ls="--", zorder=4))
        ax.set_xlabel(ctx.label(dims[0]))
        ax.set_ylabel(ctx.label(dims[1]))
        _gate_legend(ax, step, total, _emptiest_corner(H), region=True)
        return frame
    # one dimension: histogram with the region shaded
    dim, lim = dims[0], lims[0]
    frame = ctx.frame(title, headline, caption, colorbar=False)
    ax = frame.ax
    counts = _hist1d(ctx.values(dim, idx), lim)
    edges = np.linspace(lim[0], lim[1], counts.size + 1)
    ax.fill_between(edges, np.append(counts, counts[-1]), step="post", color="#bbbbbb", lw=0)
    ymax = max(1.0, float(counts.max())) * 1.12
    ax.fill_between(axes1d[0], 0, ymax, where=region, color=GATE_COLOR, alpha=0.2, lw=0)
    ax.stairs(counts, edges, color="#333333", lw=0.9)
    ax.set_xlim(lim)
    ax.set_ylim(0, ymax)
    ax.set_xlabel(ctx.label(dim))
    ax.set_ylabel("events per bin")
    _gate_legend(ax, step, total, _emptiest_corner(_profile(counts, ymax)), region=True)
    return frame
