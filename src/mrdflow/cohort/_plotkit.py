"""Shared by the cohort figures (:mod:`mrdflow.cohort._figures`): fixed colours and style, values read
from the cohort tables, saving, legends and label placement.

Colours are fixed per category, whatever the data holds: best response by :data:`RESPONSE_COLORS`
(greens for sCR/CR, blue VGPR, light blue PR, greys MR/SD, red PD) and dose level by
:func:`dose_color` (Okabe–Ito colours for the usual dose ladder).
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mrdflow.atomic import atomic_path
from mrdflow.formatting import dose_from_label, dose_label

#: IMWG best response -> colour (best to worst).
RESPONSE_COLORS: dict[str, str] = {
    "sCR": "#00561f",
    "CR": "#41ab5d",
    "VGPR": "#2166ac",
    "PR": "#92c5de",
    "MR": "#969696",
    "SD": "#cfcfcf",
    "PD": "#d6301f",
}
NO_RESPONSE_COLOR = "#ffffff"      # response missing: white with a dark edge
RESPONSE_ORDER = tuple(RESPONSE_COLORS)
RESPONDERS = ("sCR", "CR", "VGPR", "PR")

#: Dose level label (as :func:`mrdflow.formatting.dose_label` writes it) -> colour (Okabe–Ito).
DOSE_COLORS: dict[str, str] = {
    "5.0×10^7": "#56b4e9",
    "1.0×10^8": "#009e73",
    "1.5×10^8": "#e69f00",
    "3.0×10^8": "#0072b2",
    "4.5×10^8": "#d55e00",
    "6.0×10^8": "#cc79a7",
    "9.0×10^8": "#000000",
}
_DOSE_EXTRA = ("#882255", "#44aa99", "#999933", "#332288", "#aa4499", "#117733", "#88ccee", "#ddcc77")
UNKNOWN_DOSE_COLOR = "#8c8c8c"

#: Marrow MRD call -> marker style (Line2D keywords), as the swimmer and the course figure draw it.
MRD_MARKS: dict[str, dict[str, Any]] = {
    "negative": dict(marker="o", ms=7, mfc="white", mec="#222222", mew=1.1),
    "positive": dict(marker="o", ms=7, mfc="#222222", mec="white", mew=0.8),
    "not_evaluable": dict(marker="s", ms=6, mfc="#bdbdbd", mec="#222222", mew=0.9),
}

MONTH_DAYS = 30.4375
IMWG_MRD = 1e-5
DPI = 200
INK = "#222222"
MUTED = "#666666"

# Explicit style, so a user's matplotlibrc does not change the output.
_RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8.5,
    "axes.linewidth": 0.8,
    "axes.edgecolor": "#333333",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.facecolor": "white",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.unicode_minus": True,
    "text.usetex": False,
    "mathtext.default": "regular",
    "svg.fonttype": "none",
    "svg.hashsalt": "mrdflow-cohort",
    "svg.image_inline": True,
    "path.simplify": True,
    "lines.solid_capstyle": "round",
}



# ---------------------------------------------------------------------------------------------
# Small helpers: values, labels, colours
# ---------------------------------------------------------------------------------------------

def _num(v: Any) -> float:
    """A finite float, or NaN for None/NaN/NA/text that is not a number."""
    if v is None or v is pd.NA:
        return math.nan
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _text(v: Any) -> str | None:
    """A stripped string, or None for None/NaN/NA/empty."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    s = str(v).strip()
    return s or None


def _date(v: Any) -> pd.Timestamp | None:
    if _text(v) is None:
        return None
    t = pd.to_datetime(v, errors="coerce")
    return None if pd.isna(t) else t


def _frame(df: Any) -> pd.DataFrame:
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame()


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """``df[name]``, or a column of None when it is absent."""
    if name in df.columns:
        return df[name]
    return pd.Series([None] * len(df), index=df.index, dtype=object)


def _response(v: Any) -> str | None:
    """Canonical IMWG spelling ('scr' -> 'sCR'), or None when missing or unknown."""
    s = _text(v)
    if s is None:
        return None
    for r in RESPONSE_ORDER:
        if s.lower() == r.lower():
            return r
    return None


def _response_color(r: str | None) -> str:
    return RESPONSE_COLORS.get(r or "", NO_RESPONSE_COLOR)



def _dose_key(cells: Any, label: Any = None) -> str | None:
    """The dose level's label (:func:`mrdflow.formatting.dose_label`) from the cell count, else from
    the label text."""
    c = _num(cells)
    if not math.isfinite(c):
        c = dose_from_label(_text(label))
    if math.isfinite(c) and c > 0:
        return dose_label(c)
    return _text(label)


def dose_color(label: str | None, others: Iterable[str | None] = ()) -> str:
    """Colour of a dose level. The usual ladder has fixed colours (:data:`DOSE_COLORS`); another
    dose gets the next spare colour by its rank among the unusual doses in ``others``."""
    if not label:
        return UNKNOWN_DOSE_COLOR
    if label in DOSE_COLORS:
        return DOSE_COLORS[label]
    extra = sorted({o for o in others if o and o not in DOSE_COLORS} | {label},
                   key=lambda s: (dose_from_label(s), s))
    return _DOSE_EXTRA[extra.index(label) % len(_DOSE_EXTRA)]



def _infusion_offsets(patients: pd.DataFrame) -> dict[str, float]:
    """Patient -> days from infusion 1 to infusion 2 (clinical dates in the patients table), where
    both dates are known."""
    out: dict[str, float] = {}
    for _, r in patients.iterrows() if not patients.empty else []:
        pid = _text(r.get("patient_id"))
        d1, d2 = _date(r.get("infusion1_date")), _date(r.get("infusion2_date"))
        if pid is not None and d1 is not None and d2 is not None:
            out[pid] = float((d2 - d1).days)
    return out


def _day_since_infusion1(row: Any, offsets: Mapping[str, float]) -> float:
    """A sample's day since infusion 1: its ``day_since_infusion1``, else its ``day`` counted from its
    own infusion (``infusion``, 1 when missing) moved by that infusion's offset; NaN when unknown.
    ``row``: a mapping or a table row (anything with ``.get``)."""
    d = _num(row.get("day_since_infusion1"))
    if math.isfinite(d):
        return d
    day, inf = _num(row.get("day")), _num(row.get("infusion"))
    if not math.isfinite(day):
        return math.nan
    if not math.isfinite(inf) or inf == 1:
        return day
    off = offsets.get(_text(row.get("patient_id")) or "", math.nan) if inf == 2 else math.nan
    return day + off


def _get(m: Any, key: str) -> Any:
    if m is None:
        return None
    if isinstance(m, Mapping):
        return m.get(key)
    return getattr(m, key, None)



# ---------------------------------------------------------------------------------------------
# Figures and files
# ---------------------------------------------------------------------------------------------

def _styled(func):
    """Run a figure function under the module's fixed style (a user's matplotlibrc does not leak in)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return func(*args, **kwargs)
    return wrapper


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06, wspace=0.02, hspace=0.02)
    return fig


def _paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    return Path(f"{stem}.png"), Path(f"{stem}.svg")


def _save(fig: Figure, stem: str | Path) -> list[Path]:
    png, svg = _paths(stem)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    with atomic_path(svg) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
    fig.clear()
    return [png, svg]


def _no_data(stem: str | Path, title: str, why: str = "no data") -> list[Path]:
    fig = _new_figure(5.6, 2.8)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, loc="left", fontweight="bold")
    lines = [w for line in why.splitlines() for w in (textwrap.wrap(line, 60) or [""])]
    ax.text(0.5, 0.5, "\n".join(lines), transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color=MUTED, in_layout=False)
    return _save(fig, stem)


def _header(label: str) -> tuple[Line2D, str]:
    """An invisible legend handle whose label works as a section header."""
    return Line2D([], [], linestyle="none", marker=None, label=label), label


def _legend(fig: Figure, sections: Sequence[tuple[str, Sequence[tuple[Any, str]]]], loc: str = "outside right upper"):
    """One outside-right legend with bold section headers."""
    handles, labels, bold = [], [], []
    for title, items in sections:
        if not items:
            continue
        if handles:
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(" ")
        h, lab = _header(title)
        bold.append(len(labels))
        handles.append(h)
        labels.append(lab)
        for h, lab in items:
            handles.append(h)
            labels.append(lab)
    if not handles:
        return None
    leg = fig.legend(handles, labels, loc=loc, frameon=False, handlelength=1.8,
                     handletextpad=0.6, borderaxespad=0.2, labelspacing=0.42)
    for i in bold:
        leg.get_texts()[i].set_fontweight("bold")
    return leg


def _marker(marker: str, face: str, edge: str = INK, size: float = 7, lw: float = 0.9) -> Line2D:
    return Line2D([], [], linestyle="none", marker=marker, markersize=size, markerfacecolor=face,
                  markeredgecolor=edge, markeredgewidth=lw)


def _mrd_handle(status: str) -> Line2D:
    """Legend handle of an MRD call drawn with :data:`MRD_MARKS`."""
    return Line2D([], [], linestyle="none", **MRD_MARKS[status])


def _response_items(responses: Iterable[str | None]) -> list[tuple[Any, str]]:
    present = set(responses)
    items: list[tuple[Any, str]] = [
        (Patch(facecolor=RESPONSE_COLORS[r], edgecolor="#444444", linewidth=0.6), r)
        for r in RESPONSE_ORDER if r in present]
    if None in present:
        items.append((Patch(facecolor=NO_RESPONSE_COLOR, edgecolor="#444444", linewidth=0.6), "not assessed"))
    return items


def _nondecreasing(z: Sequence[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []
    for v in z:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            tot, cnt = blocks.pop()
            blocks[-1][0] += tot
            blocks[-1][1] += cnt
    out: list[float] = []
    for tot, cnt in blocks:
        out += [tot / cnt] * int(cnt)
    return out


def _spread(labels: list[dict], min_gap: float, lo: float | None = None, hi: float | None = None) -> None:
    """Move label ``y`` (plot units, e.g. log10) as little as possible so that labels near each
    other in ``x`` (closer than their ``x_gap``, same ``group``) sit at least ``min_gap`` apart,
    keeping each cluster within [lo, hi] where it fits."""
    order = sorted(labels, key=lambda lab: (lab.get("group", 0), lab["x"]))
    clusters: list[list[dict]] = []
    for lab in order:
        prev = clusters[-1][-1] if clusters else None
        if prev is not None and prev.get("group", 0) == lab.get("group", 0) and lab["x"] - prev["x"] < lab["x_gap"]:
            clusters[-1].append(lab)
        else:
            clusters.append([lab])
    for cl in clusters:
        cl.sort(key=lambda lab: (lab["y"], lab["x"]))
        z = _nondecreasing([lab["y"] - i * min_gap for i, lab in enumerate(cl)])
        ys = [v + i * min_gap for i, v in enumerate(z)]
        if hi is not None and ys[-1] > hi:
            ys = [v - (ys[-1] - hi) for v in ys]
        if lo is not None and ys[0] < lo:
            ys = [v + (lo - ys[0]) for v in ys]
        for lab, v in zip(cl, ys):
            lab["y"] = v



def _caption_space(fig: Figure, lines: int = 1) -> None:
    """Constrained layout ignores figure texts: leave a strip at the bottom for a caption of ``lines``
    lines."""
    eng = fig.get_layout_engine()
    h = fig.get_size_inches()[1]
    strip = 0.22 + 0.125 * max(0, lines - 1)
    eng.set(rect=(0, strip / h, 1, 1 - strip / h))



def _break_marks(left, right) -> None:
    """Diagonal cut marks where the x axis breaks."""
    kw = dict(marker=[(-1, -1.6), (1, 1.6)], markersize=8, linestyle="none", color="#333333", mec="#333333",
              mew=0.9, clip_on=False)
    left.plot([1], [0], transform=left.transAxes, **kw)
    right.plot([0], [0], transform=right.transAxes, **kw)
    left.spines["right"].set_visible(False)
