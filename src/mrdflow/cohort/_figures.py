"""Cohort figures for the trial report: swimmer plot, CAR-T kinetics, NKG2A vs exposure, week-4 MRD.

Every function takes the cohort tables (:mod:`mrdflow.cohort`) and an output *stem*; it writes
``<stem>.png`` (200 dpi) and ``<stem>.svg`` and returns both paths. Figures are drawn on Agg
figures that pyplot never sees, written atomically, and carry no date or version text, so the same
tables give byte-identical files. SVG text stays text (``svg.fonttype = "none"``), so captions can
be searched and edited.

Colours are fixed per category, whatever the data holds: best response by :data:`RESPONSE_COLORS`
(greens for sCR/CR, blue VGPR, light blue PR, greys MR/SD, red PD) and dose level by
:func:`dose_color` (Okabe–Ito colours for the usual dose ladder). Response is also written out
where it matters (bar ends, legends), so the figures do not rely on colour alone.

Missing data never raises: rows without the value a figure needs are left out (and counted where it
matters); a figure with nothing to show says "no data".
"""

from __future__ import annotations

import functools
import math
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from mrdflow.atomic import atomic_path

__all__ = ["RESPONSE_COLORS", "DOSE_COLORS", "dose_color", "swimmer_plot", "kinetics_plot",
           "nkg2a_auc_plot", "mrd_plot"]

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

#: Dose level label (as :func:`mrdflow.cohort.dose_label` writes it) -> colour (Okabe–Ito).
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

_SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")


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


def _dose_label(cells: float) -> str | None:
    """3.0e8 -> '3.0×10^8' (the label :mod:`mrdflow.cohort` writes)."""
    if not (cells > 0):
        return None
    exp = int(math.floor(math.log10(cells)))
    mant = cells / 10 ** exp
    if round(mant, 1) >= 10:  # 9.99e8 rounds to 10.0
        exp, mant = exp + 1, mant / 10
    return f"{mant:.1f}×10^{exp}"


_DOSE_RE = re.compile(r"^\s*([0-9.]+)\s*(?:[x×*]\s*10\s*\^?\s*([+-−]?\d+)|e([+-]?\d+))?\s*$", re.IGNORECASE)


def _dose_value(label: str | None) -> float:
    """'3.0×10^8' / '3e8' -> 3.0e8; NaN when it cannot be read."""
    if not label:
        return math.nan
    m = _DOSE_RE.match(label)
    if not m:
        return math.nan
    exp = m.group(2) or m.group(3) or "0"
    return float(m.group(1)) * 10 ** int(exp.replace("−", "-"))


def _dose_key(cells: Any, label: Any = None) -> str | None:
    """Normalised dose label from the cell count, else from the label text."""
    c = _num(cells)
    if not math.isfinite(c):
        c = _dose_value(_text(label))
    if math.isfinite(c) and c > 0:
        return _dose_label(c)
    return _text(label)


def _pretty_dose(label: str | None) -> str:
    """'3.0×10^8' -> '3.0×10⁸' for display."""
    if not label:
        return "dose n/a"
    return re.sub(r"\^([+-]?\d+)", lambda m: m.group(1).translate(_SUPERSCRIPT), label)


def dose_color(label: str | None, others: Iterable[str | None] = ()) -> str:
    """Colour of a dose level. The usual ladder has fixed colours (:data:`DOSE_COLORS`); another
    dose gets the next spare colour by its rank among the unusual doses in ``others``."""
    if not label:
        return UNKNOWN_DOSE_COLOR
    if label in DOSE_COLORS:
        return DOSE_COLORS[label]
    extra = sorted({o for o in others if o and o not in DOSE_COLORS} | {label},
                   key=lambda s: (_dose_value(s), s))
    return _DOSE_EXTRA[extra.index(label) % len(_DOSE_EXTRA)]


def _sci(v: float, digits: int = 2) -> str:
    """8.5e-06 -> '8.5e-6' (short, for marker labels)."""
    if not math.isfinite(v) or v <= 0:
        return "n/a"
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def _minus(s: str) -> str:
    return s.replace("-", "−")


def _fmt_p(p: float) -> str:
    """'= 0.058', '= 0.21', '< 0.001'."""
    if not math.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.2f}" if p >= 0.1 else f"= {p:.2g}"


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


# ---------------------------------------------------------------------------------------------
# Swimmer plot
# ---------------------------------------------------------------------------------------------

def _months_between(a: pd.Timestamp | None, b: pd.Timestamp | None) -> float:
    if a is None or b is None:
        return math.nan
    return (b - a).days / MONTH_DAYS


@_styled
def swimmer_plot(patients: pd.DataFrame, mrd: pd.DataFrame | None, stem: str | Path, *,
                 data_cut: Any = None) -> list[Path]:
    """Swimmer plot: one bar per patient over follow-up (months since infusion 1), longest on top,
    coloured by best response, with MRD results (marrow samples after infusion), a second infusion,
    progression, and an arrow for a response that is ongoing (no progression, not dead, ≥ PR).

    ``data_cut``: the data cut-off date; shown in the caption, and used for the follow-up of a
    patient whose ``follow_up_months`` is missing (cut-off minus infusion 1).
    """
    title = "Follow-up and response by patient"
    p = _frame(patients)
    if p.empty or "patient_id" not in p.columns:
        return _no_data(stem, title)
    m = _frame(mrd)
    cut = _date(data_cut)

    rows = []
    for _, r in p.iterrows():
        pid = _text(r.get("patient_id"))
        if pid is None:
            continue
        inf1 = _date(r.get("infusion1_date"))
        fu = _num(r.get("follow_up_months"))
        if not math.isfinite(fu) and cut is not None and inf1 is not None:
            fu = max(0.0, _months_between(inf1, cut))
        resp = _response(r.get("best_response"))
        prog = (_text(r.get("progression")) or "").lower() == "yes"
        dead = (_text(r.get("death")) or "").lower() == "yes"
        inf2 = _months_between(inf1, _date(r.get("infusion2_date")))
        prog_m = _months_between(inf1, _date(r.get("progression_date"))) if prog else math.nan
        if prog and not math.isfinite(prog_m) and math.isfinite(fu):
            prog_m = fu  # progressed, date missing: mark at the end of follow-up
        samples = []
        if not m.empty and "patient_id" in m.columns:
            sub = m[_col(m, "patient_id").astype(object).map(_text) == pid]
            for _, s in sub.iterrows():
                day = _num(s.get("day_since_infusion1")) if "day_since_infusion1" in sub.columns else math.nan
                if not math.isfinite(day):
                    day = _num(s.get("day"))
                status = (_text(s.get("mrd_status")) or "").lower()
                if day > 0 and status in ("negative", "positive", "not_evaluable"):
                    samples.append((day / MONTH_DAYS, status))
        ld = _text(r.get("lymphodepletion"))
        dose = _dose_key(r.get("cart_dose_cells"), r.get("dose_level"))
        rows.append(dict(pid=pid, fu=fu, resp=resp, prog=prog, prog_m=prog_m, inf2=inf2, mrd=samples,
                         ongoing=(not prog and not dead and resp in RESPONDERS and math.isfinite(fu)),
                         note=f"{_pretty_dose(dose)} · {ld + ' LD' if ld else 'LD n/a'}"))
    if not rows:
        return _no_data(stem, title)
    rows.sort(key=lambda d: (-(d["fu"] if math.isfinite(d["fu"]) else -1.0), d["pid"]))

    n = len(rows)
    xs = [d["fu"] for d in rows] + [d["inf2"] for d in rows] + [d["prog_m"] for d in rows]
    xs += [mm for d in rows for mm, _ in d["mrd"]]
    xs = [x for x in xs if math.isfinite(x)]
    xmax = max(xs + [1.0])
    arrow = 0.045 * xmax
    fig = _new_figure(7.6, 1.35 + 0.46 * n)
    ax = fig.add_subplot()
    bar_h = 0.58
    used = {"mrd_negative": False, "mrd_positive": False, "mrd_not_evaluable": False,
            "inf2": False, "prog": False, "ongoing": False}
    label_tf = blended_transform_factory(ax.transAxes, ax.transData)
    for y, d in enumerate(rows):
        fu = d["fu"]
        if math.isfinite(fu):
            ax.barh(y, fu, height=bar_h, left=0, color=_response_color(d["resp"]), edgecolor="#444444",
                    linewidth=0.6, zorder=2)
        else:
            marks = [mo for mo, _ in d["mrd"]] + [v for v in (d["prog_m"],) if math.isfinite(v)]
            ax.text(max(marks) + 0.03 * xmax if marks else 0.01 * xmax, y, "follow-up not reported", va="center",
                    ha="left", fontsize=7.5, color=MUTED, style="italic")
        end = fu if math.isfinite(fu) else 0.0
        if d["ongoing"]:
            ax.annotate("", xy=(fu + arrow, y), xytext=(fu, y), zorder=3,
                        arrowprops=dict(arrowstyle="-|>", color=INK, lw=1.2, mutation_scale=10,
                                        shrinkA=0, shrinkB=0))
            end = fu + arrow
            used["ongoing"] = True
        for mo, _ in d["mrd"]:
            end = max(end, mo + 0.022 * xmax)
        if math.isfinite(d["prog_m"]):
            end = max(end, d["prog_m"] + 0.028 * xmax)
        if math.isfinite(fu):
            ax.text(end + 0.012 * xmax, y, d["resp"] or "n/a", va="center", ha="left", fontsize=7.5,
                    color=INK if d["resp"] else MUTED)
        for mo, status in d["mrd"]:
            used[f"mrd_{status}"] = True
            if status == "negative":
                ax.plot(mo, y, marker="o", ms=7, mfc="white", mec=INK, mew=1.1, zorder=4, ls="none")
            elif status == "positive":
                ax.plot(mo, y, marker="o", ms=7, mfc=INK, mec="white", mew=0.8, zorder=4, ls="none")
            else:
                ax.plot(mo, y, marker="s", ms=6, mfc="#bdbdbd", mec=INK, mew=0.9, zorder=4, ls="none")
        if math.isfinite(d["inf2"]):
            used["inf2"] = True
            ax.plot(d["inf2"], y - bar_h / 2 - 0.02, marker="v", ms=7.5, mfc="#7b3294", mec="white", mew=0.6,
                    zorder=5, ls="none", clip_on=False)
        if math.isfinite(d["prog_m"]):
            used["prog"] = True
            ax.plot(d["prog_m"], y, marker="X", ms=9, mfc=INK, mec="white", mew=0.8, zorder=6, ls="none")
        ax.text(-0.012, y - 0.13, d["pid"], transform=label_tf, ha="right", va="center", fontsize=9,
                fontweight="bold", color=INK)
        ax.text(-0.012, y + 0.22, d["note"], transform=label_tf, ha="right", va="center", fontsize=6.5,
                color=MUTED)
    ax.set_ylim(n - 0.5, -0.65)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlim(0, xmax * 1.16)
    ax.set_xlabel("Months since first infusion")
    ax.xaxis.grid(True, color="#e6e6e6", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title(title, loc="left", fontweight="bold")

    events: list[tuple[Any, str]] = []
    if used["mrd_negative"]:
        events.append((_marker("o", "white", size=7, lw=1.1), "MRD negative"))
    if used["mrd_positive"]:
        events.append((_marker("o", INK, edge="white", size=7), "MRD positive"))
    if used["mrd_not_evaluable"]:
        events.append((_marker("s", "#bdbdbd", size=6), "MRD not evaluable"))
    if used["inf2"]:
        events.append((_marker("v", "#7b3294", edge="white", size=7.5, lw=0.6), "Second infusion"))
    if used["prog"]:
        events.append((_marker("X", INK, edge="white", size=9, lw=0.8), "Progression"))
    if used["ongoing"]:
        events.append((_marker(r"$\rightarrow$", INK, edge=INK, size=11, lw=0.3), "Response ongoing"))
    _legend(fig, [("Best response", _response_items(d["resp"] for d in rows)), ("Events", events)])
    notes = ["Bars: follow-up from infusion 1; label at bar end = best response; LD = lymphodepletion."]
    if cut is not None:
        notes.append(f"Data cut-off {cut.date().isoformat()}.")
    fig.text(0.01, 0.01, " ".join(notes), fontsize=7, color=MUTED, ha="left", va="bottom",
             wrap=False, in_layout=True)
    _caption_space(fig)
    return _save(fig, stem)


def _caption_space(fig: Figure) -> None:
    """Constrained layout ignores figure texts: leave a strip at the bottom for the caption."""
    eng = fig.get_layout_engine()
    h = fig.get_size_inches()[1]
    eng.set(rect=(0, 0.22 / h, 1, 1 - 0.22 / h))


# ---------------------------------------------------------------------------------------------
# CAR-T kinetics
# ---------------------------------------------------------------------------------------------

BREAK_DAY = 30.0   # the broken x axis: 0..BREAK_DAY wide, the rest narrow


@_styled
def kinetics_plot(kinetics: pd.DataFrame, patients: pd.DataFrame | None, stem: str | Path, *,
                  lloq: float | None = None) -> list[Path]:
    """CAR-T cells/µL (log) vs day since infusion: one line per patient and infusion (infusion 2
    dashed), coloured by that infusion's dose level; samples with no CAR-T cells (0) drawn as open
    triangles on a floor below the LLOQ; dotted LLOQ line when ``lloq`` is given; 95% CI bars when
    the table carries them. When samples run past day 42 the x axis breaks at day 30 (days 0–30
    wide, the rest narrow)."""
    title = "CAR-T expansion and persistence in blood"
    k = _frame(kinetics)
    p = _frame(patients)
    if k.empty or "patient_id" not in k.columns or "day" not in k.columns:
        return _no_data(stem, title)
    d = pd.DataFrame({
        "pid": _col(k, "patient_id").map(_text),
        "inf": _col(k, "infusion").map(lambda v: int(_num(v)) if math.isfinite(_num(v)) else 1),
        "day": _col(k, "day").map(_num),
        "y": _col(k, "cells_per_ul").map(_num),
        "lo": _col(k, "cells_per_ul_ci95_low").map(_num),
        "hi": _col(k, "cells_per_ul_ci95_high").map(_num),
    })
    d = d[d["pid"].notna() & np.isfinite(d["day"].astype(float)) & np.isfinite(d["y"].astype(float))]
    if d.empty:
        return _no_data(stem, title, "no CAR-T measurements")
    d = d.sort_values(["pid", "inf", "day"], kind="stable")

    # dose per patient and infusion
    dose: dict[tuple[str, int], str | None] = {}
    for _, r in p.iterrows() if not p.empty else []:
        pid = _text(r.get("patient_id"))
        if pid is None:
            continue
        d1 = _dose_key(r.get("cart_dose_cells"), r.get("dose_level"))
        d2 = _dose_key(r.get("infusion2_dose_cells"))
        dose[(pid, 1)] = d1
        dose[(pid, 2)] = d2 or d1
    keys = sorted(set(d[["pid", "inf"]].itertuples(index=False, name=None)))
    doses = {key: dose.get(key, dose.get((key[0], 1))) for key in keys}
    dose_set = set(doses.values())

    ypos = d["y"][d["y"] > 0]
    lloq_v = _num(lloq)
    base = min([v for v in (lloq_v, float(ypos.min()) if len(ypos) else math.nan) if math.isfinite(v) and v > 0] or [2.0])
    floor = base / 2
    ymax = max(float(ypos.max()) if len(ypos) else base, lloq_v if math.isfinite(lloq_v) else 0, base)
    ylim = (floor / 2.2, ymax * 6.0)

    dmin, dmax = float(d["day"].min()), float(d["day"].max())
    broken = dmax > 42
    fig = _new_figure(7.8, 4.7)
    if broken:
        axl, axr = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [2.4, 1.0]})
        axes = [axl, axr]
        axl.set_xlim(min(0, dmin) - 1, BREAK_DAY)
        axr.set_xlim(BREAK_DAY, dmax * 1.04)
        axl.set_xticks([t for t in (0, 7, 14, 21, 28)])
        axr.spines["left"].set_visible(False)
        axr.tick_params(axis="y", which="both", left=False)
        span = dmax * 1.04 - BREAK_DAY
        step = next(s for s in (15, 30, 60, 90, 180, 365, 730) if span / s <= 4)
        axr.set_xticks(np.arange(math.ceil((BREAK_DAY + 0.25 * step) / step) * step, dmax * 1.04 + 1e-9, step))
    else:
        ax0 = fig.add_subplot()
        axes = [ax0]
        ax0.set_xlim(min(0, dmin) - 1, max(dmax, 7) + 1.5)
        if dmax <= 35:
            ax0.set_xticks(np.arange(0, max(dmax, 7) + 1.5, 7))
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylim(*ylim)
        ax.yaxis.grid(True, which="major", color="#ececec", lw=0.6)
        ax.set_axisbelow(True)
    ax_main = axes[0]
    ax_main.set_ylabel("CAR-T cells/µL blood")
    if broken:
        fig.supxlabel("Days since infusion", fontsize=9.5)
        _break_marks(axes[0], axes[1])
    else:
        ax_main.set_xlabel("Days since infusion")
    ax_main.set_title(title, loc="left", fontweight="bold")

    labels = []
    any_nd = any_ci = False
    for key in keys:
        pid, inf = key
        s = d[(d["pid"] == pid) & (d["inf"] == inf)]
        color = dose_color(doses[key], dose_set)
        ls = "--" if inf >= 2 else "-"
        x = s["day"].to_numpy(float)
        y = s["y"].to_numpy(float)
        pos = y > 0
        yplot = np.where(pos, y, floor)
        any_nd |= bool((~pos).any())
        lo, hi = s["lo"].to_numpy(float), s["hi"].to_numpy(float)
        ci = pos & np.isfinite(lo) & np.isfinite(hi) & (hi > 0)
        for ax in axes:
            ax.plot(x, yplot, ls=ls, color=color, lw=1.3, alpha=0.9, zorder=3)
            ax.plot(x[pos], yplot[pos], ls="none", marker="o", ms=4.2, mfc=color, mec="white", mew=0.5, zorder=4)
            ax.plot(x[~pos], yplot[~pos], ls="none", marker="v", ms=5, mfc="white", mec=color, mew=1.1, zorder=4)
            if ci.any():
                ax.vlines(x[ci], np.maximum(lo[ci], floor), hi[ci], color=color, lw=0.7, alpha=0.55, zorder=2)
        any_ci |= bool(ci.any())
        if pos.any():
            i = int(np.argmax(np.where(pos, y, -np.inf)))
            on_right = broken and x[i] > BREAK_DAY
            ax = axes[1] if on_right else axes[0]
            xl = ax.get_xlim()
            labels.append(dict(ax=ax, px=x[i], py=y[i], x=x[i], group=int(on_right), y=math.log10(y[i]),
                               x_gap=0.16 * (xl[1] - xl[0]), color=color,
                               text=pid if inf == 1 else f"{pid} (inf. {inf})"))
    lspan = math.log10(ylim[1]) - math.log10(ylim[0])
    lift = 0.045 * lspan  # labels sit just above their peak
    for lab in labels:
        lab["y"] += lift
    _spread(labels, 0.052 * lspan, lo=math.log10(ylim[0]) + 0.05 * lspan, hi=math.log10(ylim[1]) - 0.03 * lspan)
    for lab in labels:
        moved = abs(lab["y"] - math.log10(lab["py"]) - lift) > 0.015 * lspan
        xl = lab["ax"].get_xlim()
        lab["ax"].annotate(lab["text"], xy=(lab["px"], lab["py"]), xytext=(lab["px"] + 0.015 * (xl[1] - xl[0]), 10 ** lab["y"]),
                           fontsize=7, color=lab["color"], fontweight="bold", ha="left", va="center", zorder=6,
                           annotation_clip=False,
                           bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7),
                           arrowprops=dict(arrowstyle="-", color=lab["color"], lw=0.5, shrinkA=0, shrinkB=3)
                           if moved else None)
    if math.isfinite(lloq_v) and lloq_v > 0:
        for ax in axes:
            ax.axhline(lloq_v, color=MUTED, ls=":", lw=1.0, zorder=1)
    if any_nd:
        for ax in axes:
            ax.axhline(floor, color="#bbbbbb", ls="-", lw=0.5, zorder=1)
        axes[-1].text(1.0, floor, " n.d.", transform=blended_transform_factory(axes[-1].transAxes, axes[-1].transData),
                      ha="left", va="center", fontsize=7, color=MUTED)

    dose_items = [(Line2D([], [], color=dose_color(lb, dose_set), lw=2, marker="o", ms=4.5, mec="white", mew=0.5),
                   _pretty_dose(lb) if lb else "dose not reported")
                  for lb in sorted(dose_set, key=lambda s: (s is None, _dose_value(s) if s else 0, s or ""))]
    infusion_items = [(Line2D([], [], color=INK, lw=1.3, ls="-"), "Infusion 1")]
    if any(inf >= 2 for _, inf in keys):
        infusion_items.append((Line2D([], [], color=INK, lw=1.3, ls="--"), "Infusion 2"))
    mark_items = [(_marker("o", INK, edge="white", size=5, lw=0.5), "Measured")]
    if any_nd:
        mark_items.append((_marker("v", "white", size=5.5, lw=1.1), "Not detected (0, drawn at n.d.)"))
    if any_ci:
        mark_items.append((Line2D([], [], color=INK, lw=0.7, alpha=0.55, marker="|", ms=8, ls="none"), "95% CI"))
    if math.isfinite(lloq_v) and lloq_v > 0:
        mark_items.append((Line2D([], [], color=MUTED, ls=":", lw=1.0), f"LLOQ ({lloq_v:g} cells/µL)"))
    _legend(fig, [("Dose level (cells)", dose_items), ("Infusion", infusion_items), ("Samples", mark_items)])
    return _save(fig, stem)


def _break_marks(left, right) -> None:
    """Diagonal cut marks where the x axis breaks."""
    kw = dict(marker=[(-1, -1.6), (1, 1.6)], markersize=8, linestyle="none", color="#333333", mec="#333333",
              mew=0.9, clip_on=False)
    left.plot([1], [0], transform=left.transAxes, **kw)
    right.plot([0], [0], transform=right.transAxes, **kw)
    left.spines["right"].set_visible(False)


# ---------------------------------------------------------------------------------------------
# NKG2A vs CAR-T exposure
# ---------------------------------------------------------------------------------------------

_Y_LABELS = {
    "cart_auc_0_28": "CAR-T AUC₀₋₂₈ (cells/µL × day)",
    "cart_auc_complete": "CAR-T AUC, all samples (cells/µL × day)",
    "cart_cmax": "CAR-T Cmax (cells/µL)",
    "cart_persistence_day": "CAR-T persistence (day)",
    "cart_tmax_day": "CAR-T Tmax (day)",
}


def _assoc_caption(assoc: Any) -> str | None:
    """'Spearman ρ = −0.71 (95% CI −0.95 to −0.02), exact p = 0.058, n = 8 — exploratory'."""
    if assoc is None:
        return None
    rho = _num(_get(assoc, "rho"))
    if not math.isfinite(rho):
        return None
    parts = [f"Spearman ρ = {rho:.2f}"]
    lo, hi = _num(_get(assoc, "ci_low")), _num(_get(assoc, "ci_high"))
    if math.isfinite(lo) and math.isfinite(hi):
        parts[0] += f" (95% CI {lo:.2f} to {hi:.2f})"
    pv = _num(_get(assoc, "p_value"))
    if math.isfinite(pv):
        method = _text(_get(assoc, "p_method"))
        parts.append(f"{method + ' ' if method else ''}p {_fmt_p(pv)}")
    nn = _num(_get(assoc, "n"))
    if math.isfinite(nn):
        parts.append(f"n = {int(nn)}")
    return _minus(", ".join(parts)) + " — exploratory"


@_styled
def nkg2a_auc_plot(patients: pd.DataFrame, stem: str | Path, *, y: str = "cart_auc_0_28",
                   assoc: Any = None) -> list[Path]:
    """Baseline NKG2A+ % of NK cells vs a CAR-T exposure column ``y`` (log scale when every value
    is positive), one labelled point per patient coloured by best response; the caption gives the
    Spearman result ``assoc`` (keys rho, ci_low, ci_high, p_value, p_method, n) and how many
    patients were left out for a missing value."""
    title = "Baseline NKG2A on NK cells vs CAR-T exposure"
    p = _frame(patients)
    if p.empty:
        return _no_data(stem, title)
    d = pd.DataFrame({
        "pid": _col(p, "patient_id").map(_text),
        "x": _col(p, "baseline_nkg2a_pct").map(_num),
        "y": _col(p, y).map(_num),
        "resp": _col(p, "best_response").map(_response),
    })
    ok = np.isfinite(d["x"].astype(float)) & np.isfinite(d["y"].astype(float))
    left_out = d[~ok]
    d = d[ok]
    stats = _assoc_caption(assoc)
    missing = ""
    if len(left_out):
        ids = ", ".join(sorted(s for s in left_out["pid"] if s))
        missing = (f"{len(left_out)} patient{'s' if len(left_out) != 1 else ''} not shown "
                   f"(missing NKG2A or {y}){': ' + ids if ids else ''}")
    if d.empty:
        return _no_data(stem, title, "no patient with both values" + (f"\n{missing}" if missing else ""))

    fig = _new_figure(6.8, 4.9)
    ax = fig.add_subplot()
    logy = bool((d["y"] > 0).all())
    if logy:
        ax.set_yscale("log")
    for _, r in d.iterrows():
        ax.scatter([r["x"]], [r["y"]], s=62, color=_response_color(r["resp"]), edgecolors=INK, linewidths=0.8,
                   zorder=3)
    # labels: just right of each point, nudged apart vertically where points are close
    xl0, xl1 = float(d["x"].min()), float(d["x"].max())
    xpad = max(2.0, 0.12 * (xl1 - xl0))
    ax.set_xlim(max(0.0, xl0 - xpad) if xl0 >= 0 else xl0 - xpad, min(100.0, xl1 + xpad) if xl1 <= 100 else xl1 + xpad)
    if logy:
        yl = np.log10(d["y"].astype(float))
        pad = max(0.25, 0.12 * float(yl.max() - yl.min()))
        ax.set_ylim(10 ** (float(yl.min()) - pad), 10 ** (float(yl.max()) + pad))
        tr = np.log10
    else:
        yv = d["y"].astype(float)
        pad = max(1.0, 0.12 * float(yv.max() - yv.min()))
        ax.set_ylim(float(yv.min()) - pad, float(yv.max()) + pad)
        tr = float
    ylo, yhi = (tr(v) for v in ax.get_ylim())
    xspan = ax.get_xlim()[1] - ax.get_xlim()[0]
    labels = [dict(x=float(r["x"]), y=float(tr(r["y"])), x_gap=0.14 * xspan, pid=r["pid"] or "?",
                   py=float(tr(r["y"]))) for _, r in d.iterrows()]
    _spread(labels, 0.055 * (yhi - ylo), lo=ylo + 0.03 * (yhi - ylo), hi=yhi - 0.03 * (yhi - ylo))
    for lab in labels:
        ty = 10 ** lab["y"] if logy else lab["y"]
        py = 10 ** lab["py"] if logy else lab["py"]
        moved = abs(lab["y"] - lab["py"]) > 0.015 * (yhi - ylo)
        ax.annotate(lab["pid"], xy=(lab["x"], py), xytext=(lab["x"] + 0.022 * xspan, ty), textcoords="data",
                    fontsize=7.5, color=INK, ha="left", va="center", zorder=4,
                    arrowprops=dict(arrowstyle="-", lw=0.4, color=MUTED, shrinkA=0, shrinkB=4) if moved else None)
    ax.set_xlabel("NKG2A+ % of NK cells (baseline)")
    ax.set_ylabel(_Y_LABELS.get(y, y))
    ax.grid(True, color="#ececec", lw=0.6)
    ax.set_axisbelow(True)
    sub = stats or f"n = {len(d)}; association not computed"
    fig.suptitle(title, x=0.01, ha="left", fontweight="bold", fontsize=9.5)
    ax.set_title(sub, loc="left", fontsize=8.5, color=INK)
    if missing:
        fig.text(0.01, 0.01, missing + ".", fontsize=7, color=MUTED, ha="left", va="bottom")
        _caption_space(fig)
    _legend(fig, [("Best response", _response_items(d["resp"]))], loc="outside right center")
    return _save(fig, stem)


# ---------------------------------------------------------------------------------------------
# Week-4 MRD
# ---------------------------------------------------------------------------------------------

def _abbrev_reason(reason: str | None) -> str:
    """A few words for a not-evaluable reason (the full text is in the tables)."""
    s = (reason or "").strip()
    low = s.lower()
    if not s:
        return "n.e."
    if low.startswith("sample quality"):
        return "QC failed"
    if low.startswith("hemodilution") or "hemodilut" in low[:40]:
        return "hemodiluted"
    if "no nucleated" in low:
        return "no cells"
    if "does not reach" in low or "only" in low and "nucleated" in low:
        return "too few cells"
    if low.startswith("no week-4") or low.startswith("no sample"):
        return "no sample"
    head = re.split(r"[:;(,]", s, maxsplit=1)[0].strip()
    return head if len(head) <= 16 else head[:15].rstrip() + "…"


@_styled
def mrd_plot(mrd: pd.DataFrame | None, patients: pd.DataFrame | None, stem: str | Path) -> list[Path]:
    """Week-4 marrow MRD per patient (patients on x, sorted by ID; log y): positive = filled circle
    at the MRD level, negative = downward triangle at the sensitivity reached (labelled '<sens'),
    not evaluable = grey cross at the sensitivity (or at the bottom when unknown) with the reason in
    short; dashed line at 10⁻⁵ (IMWG). Colour = best response. Week-4 rows come from ``mrd``
    (visit 'week4'); a patient without one there falls back to the patients table's ``w4_*``."""
    title = "Week-4 bone-marrow MRD (NGF)"
    m = _frame(mrd)
    p = _frame(patients)
    resp: dict[str, str | None] = {}
    ids: set[str] = set()
    for _, r in p.iterrows():
        pid = _text(r.get("patient_id"))
        if pid:
            ids.add(pid)
            resp[pid] = _response(r.get("best_response"))
    res: list[dict] = []
    if not m.empty and "patient_id" in m.columns:
        vis = _col(m, "visit").map(lambda v: (_text(v) or "").lower().replace("-", "").replace("_", "").replace(" ", ""))
        for _, r in m[vis.isin(["week4", "w4"])].iterrows():
            pid = _text(r.get("patient_id"))
            if pid:
                ids.add(pid)
                res.append(dict(pid=pid, status=(_text(r.get("mrd_status")) or "").lower(),
                                level=_num(r.get("mrd_level")), sens=_num(r.get("sensitivity")),
                                reason=_text(r.get("reason")), day=_num(r.get("day"))))
    have = {r["pid"] for r in res}
    for _, r in p.iterrows():
        pid = _text(r.get("patient_id"))
        if pid and pid not in have and _text(r.get("w4_mrd_status")):
            res.append(dict(pid=pid, status=(_text(r.get("w4_mrd_status")) or "").lower(),
                            level=_num(r.get("w4_mrd_level")), sens=_num(r.get("w4_sensitivity")),
                            reason=_text(r.get("w4_mrd_reason")), day=math.nan))
    res = [r for r in res if r["status"] in ("positive", "negative", "not_evaluable")]
    if not res:
        return _no_data(stem, title, "no week-4 MRD results")
    order = sorted(ids)
    xpos = {pid: i for i, pid in enumerate(order)}
    vals = [v for r in res for v in (r["level"], r["sens"]) if math.isfinite(v) and v > 0] + [IMWG_MRD]
    lo_v, hi_v = min(vals), max(vals)
    ylim = (10 ** (math.floor(math.log10(lo_v)) - 0.6), 10 ** (math.ceil(math.log10(hi_v)) + 0.6))
    unplaced = any(pid not in {r["pid"] for r in res} for pid in order) or any(
        not (math.isfinite(r["level"]) and r["level"] > 0) and not (math.isfinite(r["sens"]) and r["sens"] > 0)
        for r in res)
    bottom = 10 ** (math.log10(ylim[0]) + 0.35)   # where a result without a level or sensitivity is drawn
    if unplaced:  # a band of its own below the data, with room for two lines of label under it
        bottom = 10 ** (math.floor(math.log10(lo_v)) - 0.9)
        ylim = (bottom / 10 ** 0.75, ylim[1])

    fig = _new_figure(max(5.2, 1.9 + 0.62 * len(order)), 4.6)
    ax = fig.add_subplot()
    ax.set_yscale("log")
    ax.set_ylim(*ylim)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.axhline(IMWG_MRD, color=MUTED, ls="--", lw=1.0, zorder=1)
    if unplaced:  # the band for results with no level to place them by is not a scale value
        top = bottom * 10 ** 0.45
        ax.axhspan(ylim[0], top, color="#f2f2f2", lw=0, zorder=0)
        ax.text(1.0, math.sqrt(ylim[0] * top), " no value", ha="left", va="center", fontsize=7,
                color=MUTED, transform=blended_transform_factory(ax.transAxes, ax.transData))
        e0, e1 = math.ceil(math.log10(top)), math.floor(math.log10(ylim[1]))
        ax.set_yticks([10.0 ** e for e in range(e0, e1 + 1)])
        ax.set_yticks([m * 10.0 ** e for e in range(e0 - 1, e1 + 1) for m in range(2, 10)
                       if top <= m * 10.0 ** e <= ylim[1]], minor=True)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(*ylim)
    ax.text(1.0, IMWG_MRD, " 10⁻⁵ (IMWG)", transform=blended_transform_factory(ax.transAxes, ax.transData),
            ha="left", va="center", fontsize=7.5, color=MUTED)
    by_pid: dict[str, list[dict]] = {}
    for r in sorted(res, key=lambda r: (r["pid"], r["day"] if math.isfinite(r["day"]) else 0)):
        by_pid.setdefault(r["pid"], []).append(r)
    used = set()
    for pid, rs in by_pid.items():
        for j, r in enumerate(rs):
            x = xpos[pid] + (j - (len(rs) - 1) / 2) * 0.22
            color = _response_color(resp.get(pid))
            st = r["status"]
            used.add(st)
            if st == "positive" and math.isfinite(r["level"]) and r["level"] > 0:
                yv, label = r["level"], _minus(_sci(r["level"]))
                ax.plot(x, yv, marker="o", ms=9, mfc=color, mec=INK, mew=0.9, ls="none", zorder=4)
            elif st == "positive":
                yv, label = (r["sens"] if math.isfinite(r["sens"]) else bottom), "positive,\nlevel n/a"
                ax.plot(x, yv, marker="o", ms=9, mfc=color, mec=INK, mew=0.9, ls="none", zorder=4)
            elif st == "negative":
                known = math.isfinite(r["sens"]) and r["sens"] > 0
                yv = r["sens"] if known else bottom
                label = "<" + _minus(_sci(r["sens"])) if known else "neg.\nsens. n/a"
                ax.plot(x, yv, marker="v", ms=9.5, mfc=color, mec=INK, mew=0.9, ls="none", zorder=4)
            else:
                known = math.isfinite(r["sens"]) and r["sens"] > 0
                yv = r["sens"] if known else bottom
                label = "\n".join(textwrap.wrap(_abbrev_reason(r["reason"]), 10))
                ax.plot(x, yv, marker="x", ms=8.5, mec="#7f7f7f", mew=2.0, ls="none", zorder=4)
            ax.annotate(label, xy=(x, yv), xytext=(0, -9 if st != "positive" else 9), textcoords="offset points",
                        ha="center", va="top" if st != "positive" else "bottom", fontsize=6.8,
                        color=INK if st != "not_evaluable" else MUTED, linespacing=1.0)
    for pid in order:
        if pid not in by_pid:
            ax.text(xpos[pid], bottom, "no\nsample", ha="center", va="center", fontsize=6.8, color=MUTED,
                    style="italic", linespacing=1.0)
    ax.set_xticks(range(len(order)), order)
    ax.tick_params(axis="x", length=0)
    ax.set_ylabel("MRD (aberrant PC / nucleated cells)")
    ax.yaxis.grid(True, which="major", color="#ececec", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_title(title, loc="left", fontweight="bold")
    marks = []
    if "positive" in used:
        marks.append((_marker("o", "white", size=8), "Positive (at level)"))
    if "negative" in used:
        marks.append((_marker("v", "white", size=8.5), "Negative (< sensitivity)"))
    if "not_evaluable" in used:
        marks.append((_marker("x", "none", edge="#7f7f7f", size=8, lw=2.0), "Not evaluable (at sensitivity)"))
    marks.append((Line2D([], [], color=MUTED, ls="--", lw=1.0), "10⁻⁵ threshold (IMWG)"))
    _legend(fig, [("Best response", _response_items(resp.get(pid) for pid in order)), ("Week-4 MRD", marks)])
    return _save(fig, stem)
