"""Drawing pieces of the per-sample gating plots (:mod:`mrdflow.sample._plots`): the figure frame
(header, axes, colour bar, caption; geometry in inches), density rasters and histogram binning, the
gate legend, and the caption text (bounds, percentages, time-QC reasons).

The header and caption are set by Pillow on the rendered figure, not by matplotlib: Agg lays out
and rasterises a text glyph by glyph (~40 µs a glyph here, measured), and a caption's few hundred
glyphs were a third of a plot's time; Pillow renders a line in one FreeType call, with
matplotlib's own DejaVu Sans. Axes, ticks, labels and legends stay matplotlib's.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mrdflow.gating import GateStep

BINS_2D = 256          # bins per axis of a density plot
BINS_1D = 256          # histogram bins

GATE_COLOR = "#d62728"
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
    "text.hinting": "no_hinting",  # ~20% of a plot's text time (measured), no visible loss at 110 dpi
}


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
    unsure = "   [UNSURE: review]" if getattr(step, "review", None) else ""
    return (f"{step.gate_id}  —  {step.count:,} events = {_pct(step.count, parent_total)} "
            f"of {parent} ({parent_total:,}){unsure}")


def _rect_caption(step: GateStep, drawn: Sequence[str]) -> list[str]:
    """One line per bound: where it sits and how it was placed; bounds off the plot are marked. An
    unsure gate (``step.review``) says so first, with why: this is the plot a reviewer opens."""
    lines = [f"Review needed: {step.review}"] if getattr(step, "review", None) else []
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

@cache
def _font(bold: bool, size_px: float):
    """Matplotlib's DejaVu Sans (regular or bold) at ``size_px`` pixels, as a Pillow font."""
    from matplotlib.font_manager import FontProperties, findfont
    from PIL import ImageFont

    path = findfont(FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))
    return ImageFont.truetype(path, size=size_px)


class _Frame:
    """A figure with a two-line header, a plot area (one axes, or a rate strip above a density
    axes), an optional colour bar and a caption; geometry in inches, no layout engine. The header
    and caption lines are kept in ``texts`` and set by :meth:`save` (module docstring).

    A frame is built once per layout (``strip``, ``colorbar``) and reused for every plot of that
    layout in one :func:`~mrdflow.sample._plots.plot_gating` call (:class:`_Frames`): building the
    axes and their ticks was a third of a plot's time (measured). :meth:`start` clears what the
    previous plot drew and fits the figure to this plot's caption, so a plot does not depend on the
    ones before it (a test compares each plot drawn alone with the same plot drawn in sequence).
    """

    def __init__(self, *, strip: bool = False, colorbar: bool = True):
        self.fig = Figure(figsize=(FIG_W, HEADER_H + AX_H + XLABEL_H))
        FigureCanvasAgg(self.fig)
        self.has_strip = strip
        self.strip = self.fig.add_axes([0, 0, 1, 1]) if strip else None
        self.ax = self.fig.add_axes([0, 0, 1, 1])
        self.cax = self.fig.add_axes([0, 0, 1, 1]) if colorbar else None
        if self.cax is not None:  # a log colour bar drawn by hand (_density): axes kept between plots
            self.cax.set_yscale("log")
            self.cax.yaxis.tick_right()
            self.cax.yaxis.set_label_position("right")
            self.cax.set_xticks([])
            self.cax.tick_params(labelsize=7)
        self.texts: list[tuple[float, float, str, float, bool, str]] = []

    def start(self, title: str, headline: str, caption: Sequence[str]) -> _Frame:
        """Clear the previous plot's artists and lay the frame out for this plot's caption."""
        for ax in (self.strip, self.ax, self.cax):
            if ax is None:
                continue
            for artist in [*ax.images, *ax.patches, *ax.lines, *ax.collections, *ax.texts]:
                artist.remove()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.set_xlabel("")
            ax.set_ylabel("")
        lines = _wrap(caption)
        cap_h = CAPTION_PAD + CAPTION_LINE_H * len(lines) + (0.08 if lines else 0.0)
        h = HEADER_H + AX_H + XLABEL_H + cap_h
        self.fig.set_size_inches(FIG_W, h)

        def box(left, top, w, hh):  # inches from the top-left -> figure fraction rect
            return [left / FIG_W, (h - top - hh) / h, w / FIG_W, hh / h]

        # (left, top) in inches from the figure's top-left, text, size in points, bold, colour
        self.texts = [
            (0.5, 0.10, title, 10.5, True, "#000000"),
            (0.5, 0.36, headline, 9 if len(headline) <= 88 else max(6.0, 9 * 88 / len(headline)), False, "#000000"),
        ]
        top, ax_h = HEADER_H, AX_H
        if self.strip is not None:
            strip_h = 1.15
            self.strip.set_position(box(AX_LEFT, top, AX_W, strip_h))
            top, ax_h = top + strip_h + 0.08, AX_H - strip_h - 0.08
        self.ax.set_position(box(AX_LEFT, top, AX_W, ax_h))
        if self.cax is not None:
            self.cax.set_position(box(AX_LEFT + AX_W + CBAR_GAP, top, CBAR_W, ax_h))
        y = HEADER_H + AX_H + XLABEL_H + CAPTION_PAD
        for line in lines:
            self.texts.append((0.35, y, line, 7.5, False, "#222222"))
            y += CAPTION_LINE_H
        return self

    def save(self, path: str | Path, dpi: float) -> None:
        """Render at ``dpi``, set the header and caption, write a PNG (no metadata: the same
        plot gives the same bytes)."""
        from PIL import Image, ImageDraw

        self.fig.set_dpi(dpi)
        canvas = self.fig.canvas
        canvas.draw()
        img = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
        draw = ImageDraw.Draw(img)
        for left, top, text, size, bold, color in self.texts:
            font = _font(bold, size * dpi / 72.0)
            room = (FIG_W - left - 0.15) * dpi
            width = draw.textlength(text, font=font)
            if width > room:  # a long line (a streamed tube's title names its sample) shrinks to fit
                font = _font(bold, max(6.0, size * room / width) * dpi / 72.0)
            # va="top": the line's ascender at ``top`` (Pillow's "la" anchor)
            draw.text((left * dpi, top * dpi), text, font=font, fill=color, anchor="la")
        img.save(path, format="png", compress_level=1)


class _Frames:
    """The frames of one plotting call, one per layout, each reused (:class:`_Frame`)."""

    def __init__(self):
        self._frames: dict[tuple[bool, bool], _Frame] = {}

    def __call__(self, title: str, headline: str, caption: Sequence[str], *, strip: bool = False,
                 colorbar: bool = True) -> _Frame:
        key = (strip, colorbar)
        if key not in self._frames:
            self._frames[key] = _Frame(strip=strip, colorbar=colorbar)
        return self._frames[key].start(title, headline, caption)


def _density(frame: _Frame, ax, x, y, xlim, ylim, nx=None, ny=None):
    if nx is None:
        nx = ny = BINS_2D if x.size >= 50_000 else BINS_2D // 2
    H = density2d(x, y, xlim, ylim, nx, ny)
    vmax = max(10.0, float(H.max()))
    img = np.ma.masked_equal(H, 0)
    ax.imshow(img, origin="lower", extent=(xlim[0], xlim[1], ylim[0], ylim[1]), aspect="auto",
              cmap=CMAP, norm=LogNorm(vmin=1, vmax=vmax), interpolation="nearest", rasterized=True)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    if frame.cax is not None:
        # the colour bar as matplotlib's would draw it (a log scale of the image's colours), on
        # axes the frame keeps: Figure.colorbar rebuilds its axes' state every plot
        cax = frame.cax
        edges = np.geomspace(1.0, vmax, 257)
        cax.pcolormesh([0.0, 1.0], edges, np.sqrt(edges[:-1] * edges[1:])[:, None], cmap=CMAP,
                       norm=LogNorm(vmin=1, vmax=vmax), rasterized=True)
        cax.set_xlim(0.0, 1.0)
        cax.set_ylim(1.0, vmax)
        ticks = [m * 10 ** e for e in range(0, 9) for m in (1, 3) if m * 10 ** e <= vmax]
        cax.set_yticks(ticks, labels=[f"{t:,}" for t in ticks])
        cax.minorticks_off()  # a log colour bar's minor ticks cost more to draw than the plot
        cax.set_ylabel("events per bin (log)", fontsize=8)
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

