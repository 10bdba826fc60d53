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
order-preserving random subsample); the rate trace always counts every event.
"""

from __future__ import annotations

import re
import textwrap
import zlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon, Rectangle

from mrdflow.atomic import atomic_path
from mrdflow.gating import GateStep, TubeGating, points_in_polygon

__all__ = ["plot_gating", "plot_file_name"]

FL_LIMITS = (-0.05, 1.05)
SCATTER_LIMITS = (0.0, 1.05)
BINS_2D = 256          # bins per axis of a density plot
BINS_1D = 256          # histogram bins
TIME_BINS = 240        # time bins of the rate trace and the Time vs FSC-A density
SEED = 596             # subsampling seed (mixed with the parent gate's name)

GATE_COLOR = "#d62728"
EXCLUDED_COLOR = "#d62728"
OPERAND_COLOR = "#444444"
CMAP = "viridis"

# Figure geometry (inches).
FIG_W = 6.4
HEADER_H = 0.62
AX_LEFT = 0.80
AX_W = 4.45
AX_H = 4.30
CBAR_GAP = 0.12
CBAR_W = 0.14
XLABEL_H = 0.52
CAPTION_LINE_H = 0.150
CAPTION_PAD = 0.12
CAPTION_WRAP = 104

# Explicit style, so a user's matplotlibrc does not change the output.
_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.linewidth": 0.8,
    "axes.edgecolor": "#333333",
    "axes.facecolor": "white",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "image.interpolation": "nearest",
    "text.usetex": False,
    "path.simplify": True,
    "agg.path.chunksize": 0,
}

_BAD_RE = re.compile(r"^(?P<group>.+)_bad(?P<n>\d+)$")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def plot_file_name(index: int, gate_id: str, n_steps: int = 0) -> str:
    """``<NN>_<gate_id>.png`` for the step at 1-based ``index`` (NN zero-padded to 2 digits, more
    when there are 100+ steps); characters unsafe in file names become ``_``."""
    width = max(2, len(str(n_steps)))
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", gate_id)
    return f"{index:0{width}d}_{safe}.png"


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
            fig = _figure_for(ctx, step, title)
            if fig is None:
                continue
            path = outdir / plot_file_name(i, step.gate_id, len(g.steps))
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
            fig.clear()
            paths.append(path)
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


def _bin(v: np.ndarray, lim: tuple[float, float], n: int) -> np.ndarray:
    """Bin index of each value in ``n`` equal bins over ``lim``; values beyond the range land in
    the edge bins (shown piled on the axis, as cytometry software does)."""
    scale = n / (lim[1] - lim[0])
    idx = np.floor((v.astype(np.float64, copy=False) - lim[0]) * scale)
    np.clip(idx, 0, n - 1, out=idx)
    return idx.astype(np.intp)


def _bins_for(n: int, full: int) -> int:
    """Fewer, larger bins for small parents (a 10^4-event histogram in 256 bins is mostly noise)."""
    if n >= 50_000:
        return full
    return max(64, full // 2) if n >= 5_000 else max(64, full // 4)


def _finite(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    ok = np.ones(arrays[0].shape, bool)
    for a in arrays:
        ok &= np.isfinite(a)
    if ok.all():
        return arrays
    return tuple(a[ok] for a in arrays)


def density2d(x: np.ndarray, y: np.ndarray, xlim, ylim, nx: int = BINS_2D, ny: int = BINS_2D) -> np.ndarray:
    """Counts per bin, shape (ny, nx) (rows = y), as ``np.histogram2d(x, y, range=...)``.T with
    out-of-range events clipped into the edge bins; a bincount, ~10x faster than histogram2d."""
    x, y = _finite(x, y)
    flat = _bin(y, ylim, ny) * nx + _bin(x, xlim, nx)
    return np.bincount(flat, minlength=nx * ny).reshape(ny, nx)


def _hist1d(v: np.ndarray, lim, n: int | None = None) -> np.ndarray:
    (v,) = _finite(v)
    n = _bins_for(v.size, BINS_1D) if n is None else n
    return np.bincount(_bin(v, lim, n), minlength=n)


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def _pct(count: int, parent: int) -> str:
    if parent <= 0:
        return "n/a"
    p = 100.0 * count / parent
    if p == 0:
        return "0%"
    if p >= 10:
        return f"{p:.1f}%"
    if p >= 0.01:
        return f"{p:.3g}%" if p < 1 else f"{p:.2f}%"
    return f"{p:.2g}%"


def _fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _bound_text(dim: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{_fmt(lo)} ≤ {dim} < {_fmt(hi)}"
    if lo is not None:
        return f"{dim} ≥ {_fmt(lo)}"
    if hi is not None:
        return f"{dim} < {_fmt(hi)}"
    return f"{dim}: any"


def _headline(step: GateStep, parent_total: int) -> str:
    parent = step.parent or "all events"
    return (f"{step.gate_id}  —  {step.count:,} events = {_pct(step.count, parent_total)} "
            f"of {parent} ({parent_total:,})")


def _rect_caption(step: GateStep, drawn: Sequence[str]) -> list[str]:
    """One line per bound: where it sits and how it was placed; bounds off the plot are marked."""
    lines = []
    for dim, (lo, hi) in step.bounds.items():
        extra = "" if dim in drawn else "   [not drawn: other axis]"
        for side, val in (("min", lo), ("max", hi)):
            if val is None:
                continue
            note = step.how.get(f"{dim}.{side}", "template value")
            lines.append(f"{_bound_text(dim, *((val, None) if side == 'min' else (None, val)))}   ← {note}{extra}")
    for key, note in step.how.items():
        if key and key.rsplit(".", 1)[0] not in step.bounds:
            lines.append(f"{key}: {note}")
    if step.how.get(""):
        lines.append(step.how[""])
    return lines


_REASONS_RE = re.compile(r"(?:drift:[^,\s]+|rate)(?:,(?:drift:[^,\s]+|rate))*")


def _pretty_reasons(text: str) -> str:
    """``drift:CD19,drift:FSC-A,rate`` (time-QC reasons) -> ``event rate; signal drift in CD19, FSC-A``."""
    def sub(m: re.Match) -> str:
        toks = m.group(0).split(",")
        drift = [t.split(":", 1)[1] for t in toks if t.startswith("drift:")]
        parts = (["event rate"] if "rate" in toks else []) + (
            [f"signal drift in {', '.join(drift)}"] if drift else [])
        return "; ".join(parts)
    return _REASONS_RE.sub(sub, text)


def _sample_note(idx: np.ndarray | None, total: int) -> list[str]:
    if idx is None or idx.size >= total:
        return []
    return [f"Plotted: a seeded random {idx.size:,} of the {total:,} parent events."]


def _wrap(lines: Sequence[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        out.extend(textwrap.wrap(line, CAPTION_WRAP, subsequent_indent="    ") or [""])
    return out


# ---------------------------------------------------------------------------------------------
# Figure frame
# ---------------------------------------------------------------------------------------------

class _Frame:
    """A figure with a two-line header, a plot area (one axes, or a rate strip above a density
    axes), an optional colour bar and a caption; geometry in inches, no layout engine."""

    def __init__(self, title: str, headline: str, caption: Sequence[str], *, strip: bool = False,
                 colorbar: bool = True):
        lines = _wrap(caption)
        cap_h = CAPTION_PAD + CAPTION_LINE_H * len(lines) + (0.08 if lines else 0.0)
        h = HEADER_H + AX_H + XLABEL_H + cap_h
        self.fig = Figure(figsize=(FIG_W, h))
        FigureCanvasAgg(self.fig)
        f = self.fig

        def box(left, top, w, hh):  # inches from the top-left -> figure fraction rect
            return [left / FIG_W, (h - top - hh) / h, w / FIG_W, hh / h]

        f.text(0.5 / FIG_W, 1 - 0.10 / h, title, ha="left", va="top", fontsize=10.5, fontweight="bold")
        f.text(0.5 / FIG_W, 1 - 0.36 / h, headline, ha="left", va="top",
               fontsize=9 if len(headline) <= 88 else max(6.0, 9 * 88 / len(headline)))
        top = HEADER_H
        if strip:
            strip_h = 1.15
            self.strip = f.add_axes(box(AX_LEFT, top, AX_W, strip_h))
            top, ax_h = top + strip_h + 0.08, AX_H - strip_h - 0.08
        else:
            self.strip = None
            ax_h = AX_H
        self.ax = f.add_axes(box(AX_LEFT, top, AX_W, ax_h))
        self.cax = f.add_axes(box(AX_LEFT + AX_W + CBAR_GAP, top, CBAR_W, ax_h)) if colorbar else None
        y = HEADER_H + AX_H + XLABEL_H + CAPTION_PAD
        for line in lines:
            f.text(0.35 / FIG_W, 1 - y / h, line, ha="left", va="top", fontsize=7.5, color="#222222")
            y += CAPTION_LINE_H


def _density(frame: _Frame, ax, x, y, xlim, ylim, nx=None, ny=None):
    if nx is None:
        nx = ny = BINS_2D if x.size >= 50_000 else BINS_2D // 2
    H = density2d(x, y, xlim, ylim, nx, ny)
    vmax = max(10.0, float(H.max()))
    img = np.ma.masked_equal(H, 0)
    im = ax.imshow(img, origin="lower", extent=(xlim[0], xlim[1], ylim[0], ylim[1]), aspect="auto",
                   cmap=CMAP, norm=LogNorm(vmin=1, vmax=vmax), interpolation="nearest", rasterized=True)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    if frame.cax is not None:
        cb = frame.fig.colorbar(im, cax=frame.cax)
        cb.set_label("events per bin (log)", fontsize=8)
        cb.ax.tick_params(labelsize=7)
        cb.ax.minorticks_off()  # a log colour bar's minor ticks cost more to draw than the plot
        ticks = [m * 10 ** e for e in range(0, 9) for m in (1, 3) if m * 10 ** e <= vmax]
        cb.set_ticks(ticks, labels=[f"{t:,}" for t in ticks])
    return H


_CORNERS = ("upper right", "upper left", "lower right", "lower left")


def _emptiest_corner(H: np.ndarray) -> str:
    """The axes corner whose box (40% wide, 22% high) holds the fewest events; H: (rows = y, x)."""
    ny, nx = H.shape
    bx, by = max(1, int(0.40 * nx)), max(1, int(0.22 * ny))
    boxes = {
        "upper right": H[ny - by:, nx - bx:], "upper left": H[ny - by:, :bx],
        "lower right": H[:by, nx - bx:], "lower left": H[:by, :bx],
    }
    return min(_CORNERS, key=lambda c: (int(boxes[c].sum()), _CORNERS.index(c)))


def _gate_legend(ax, step: GateStep, total: int, loc: str, *, region: bool = False) -> None:
    handle = (Patch(fc=GATE_COLOR, ec=GATE_COLOR, alpha=0.35) if region
              else Line2D([], [], color=GATE_COLOR, lw=1.6))
    leg = ax.legend([handle], [f"{step.gate_id}: {step.count:,} ({_pct(step.count, total)})"], loc=loc,
                    fontsize=8.5, frameon=True, framealpha=0.9, handlelength=1.6, borderaxespad=0.4)
    leg.set_zorder(7)


def _profile(counts: np.ndarray, ymax: float, rows: int = 50) -> np.ndarray:
    """A histogram as a (rows, bins) occupancy image, for :func:`_emptiest_corner`."""
    levels = (np.arange(rows) + 0.5) * (ymax / rows)
    return (counts[None, :] >= levels[:, None]).astype(np.int64)


def _open(lo, hi, lim):
    """Open bounds run past the plot edge so no line is drawn there."""
    span = lim[1] - lim[0]
    return (lim[0] - span if lo is None else lo), (lim[1] + span if hi is None else hi)


# ---------------------------------------------------------------------------------------------
# Plot kinds
# ---------------------------------------------------------------------------------------------

def _figure_for(ctx: _Context, step: GateStep, title: str) -> Figure | None:
    if step.dims == ("Time",) or (step.plot_dims[:1] == ("Time",) and step.kind != "polygon"):
        return _time_plot(ctx, step, title)
    if step.kind == "boolean":
        return _boolean_plot(ctx, step, title)
    dims = tuple(step.plot_dims) or tuple(step.dims)
    if step.kind == "polygon" or len(dims) >= 2:
        return _density_plot(ctx, step, title, dims[:2])
    return _histogram_plot(ctx, step, title, dims[0])


def _density_plot(ctx: _Context, step: GateStep, title: str, dims: tuple[str, str]) -> Figure:
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
    frame = _Frame(title, _headline(step, total), caption)
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
    return frame.fig


def _histogram_plot(ctx: _Context, step: GateStep, title: str, dim: str) -> Figure:
    idx, total = ctx.parent_index(step.parent)
    lim = ctx.limits(dim)
    lo, hi = step.bounds.get(dim, (None, None))
    caption = _rect_caption(step, (dim,)) + _sample_note(idx, total)
    frame = _Frame(title, _headline(step, total), caption, colorbar=False)
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
            ax.axvline(v, color=GATE_COLOR, lw=1.6, zorder=5)
            ax.text(v, ymax * 0.985, f" {_fmt(v)}", color=GATE_COLOR, fontsize=8, ha="left", va="top")
    ax.set_xlim(lim)
    ax.set_ylim(0, ymax)
    ax.set_xlabel(ctx.label(dim))
    ax.set_ylabel("events per bin")
    _gate_legend(ax, step, total, _emptiest_corner(_profile(counts, ymax)), region=True)
    return frame.fig


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


def _time_plot(ctx: _Context, step: GateStep, title: str) -> Figure:
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

    frame = _Frame(title, headline, caption, strip=True, colorbar=y_dim is not None)
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
    return frame.fig


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


def _boolean_plot(ctx: _Context, step: GateStep, title: str) -> Figure | None:
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
    parts = []
    for op, comp in ops:
        mm = _member_grid(op, dims, grids)
        parts.append(~mm if comp else mm)
    if kind == "and":
        region = np.logical_and.reduce(parts)
    elif kind == "or":
        region = np.logical_or.reduce(parts)
    else:
        region = ~parts[0]
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
        frame = _Frame(title, headline, caption)
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
        return frame.fig
    # one dimension: histogram with the region shaded
    dim, lim = dims[0], lims[0]
    frame = _Frame(title, headline, caption, colorbar=False)
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
    return frame.fig
