"""The course of each patient over time (:func:`over_time_plot`): CAR-T and host NK cells in blood, NKG2A on
the NK cells, the marrow MRD calls, a second infusion and progression, one panel per patient on a shared
axis of days since infusion 1."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from mrdflow.cohort._plotkit import (
    MONTH_DAYS,
    MRD_MARKS,
    MUTED,
    RESPONSE_COLORS,
    _caption_space,
    _date,
    _day_since_infusion1,
    _dose_key,
    _frame,
    _infusion_offsets,
    _legend,
    _marker,
    _mrd_handle,
    _new_figure,
    _no_data,
    _num,
    _response,
    _save,
    _styled,
    _text,
)
from mrdflow.formatting import dose_display

__all__ = ["over_time_plot", "course_data"]

CART_COLOR = "#0072b2"    # Okabe–Ito blue
NK_COLOR = "#d55e00"      # Okabe–Ito vermilion
NKG2A_COLOR = "#009e73"   # Okabe–Ito bluish green (right axis)
INF2_COLOR = "#7b3294"    # as the swimmer's second-infusion mark
PROG_COLOR = RESPONSE_COLORS["PD"]
FOLLOW_UP_SHADE = "#eeeeee"
MRD_STRIP = 0.9           # the MRD calls' row, in axes height


def _rows(df: pd.DataFrame, pid: str) -> list[pd.Series]:
    if df.empty or "patient_id" not in df.columns:
        return []
    return [r for _, r in df.iterrows() if _text(r.get("patient_id")) == pid]


def _cart_points(k: pd.DataFrame, pid: str, offsets: dict[str, float]) -> list[dict]:
    """The patient's CAR-T counts: day since infusion 1, infusion, cells/µL (rows without both left out)."""
    out = []
    for r in _rows(k, pid):
        day, y = _day_since_infusion1(r, offsets), _num(r.get("cells_per_ul"))
        inf = _num(r.get("infusion"))
        if math.isfinite(day) and math.isfinite(y) and y >= 0:
            out.append(dict(day=day, inf=int(inf) if math.isfinite(inf) else 1, y=y))
    return sorted(out, key=lambda d: (d["inf"], d["day"]))


def _nk_points(nk: pd.DataFrame, pid: str, offsets: dict[str, float]) -> list[dict]:
    """The patient's stained NK tubes: day since infusion 1, NK cells/µL with its CI (NaN without a
    count), the reason there is no count, NKG2A+ % of NK."""
    out = []
    for r in _rows(nk, pid):
        day = _day_since_infusion1(r, offsets)
        if not math.isfinite(day):
            continue
        y = _num(r.get("nk_cells_per_ul"))
        out.append(dict(day=day, y=y if math.isfinite(y) and y >= 0 else math.nan,
                        lo=_num(r.get("nk_cells_per_ul_ci95_low")), hi=_num(r.get("nk_cells_per_ul_ci95_high")),
                        reason=_text(r.get("nk_count_reason")), nkg2a=_num(r.get("nkg2a_pct"))))
    return sorted(out, key=lambda d: d["day"])


def _mrd_calls(m: pd.DataFrame, pid: str, offsets: dict[str, float]) -> list[tuple[float, str]]:
    """(day since infusion 1, status) of each of the patient's marrow MRD calls, baseline included."""
    out = []
    for r in _rows(m, pid):
        day, status = _day_since_infusion1(r, offsets), (_text(r.get("mrd_status")) or "").lower()
        if math.isfinite(day) and status in MRD_MARKS:
            out.append((day, status))
    return sorted(out)


def course_data(patients: pd.DataFrame | None, kinetics: pd.DataFrame | None, nk: pd.DataFrame | None,
                mrd: pd.DataFrame | None) -> dict[str, dict]:
    """Patient -> what its panel shows, every time in days since infusion 1: ``cart`` (CAR-T counts),
    ``nk`` (NK tubes), ``mrd`` (marrow calls), ``inf2`` (second infusion), ``prog`` (progression; the
    end of follow-up when the date is missing), ``fu`` (end of follow-up), ``resp`` and ``dose``. Every
    patient of any table has a panel; a time that is not known is NaN."""
    p, k, n, m = _frame(patients), _frame(kinetics), _frame(nk), _frame(mrd)
    offsets = _infusion_offsets(p)
    clinical = {pid: r for _, r in p.iterrows() for pid in [_text(r.get("patient_id"))] if pid is not None}
    ids = set(clinical)
    for df in (k, n, m):
        if "patient_id" in df.columns:
            ids |= {pid for pid in df["patient_id"].map(_text) if pid is not None}
    out: dict[str, dict] = {}
    for pid in sorted(ids):
        r = clinical.get(pid, {})
        fu = _num(r.get("follow_up_months")) * MONTH_DAYS
        prog = math.nan
        if (_text(r.get("progression")) or "").lower() == "yes":
            d1, dp = _date(r.get("infusion1_date")), _date(r.get("progression_date"))
            prog = float((dp - d1).days) if d1 is not None and dp is not None else fu
        out[pid] = dict(cart=_cart_points(k, pid, offsets), nk=_nk_points(n, pid, offsets),
                        mrd=_mrd_calls(m, pid, offsets), inf2=offsets.get(pid, math.nan), prog=prog, fu=fu,
                        resp=_response(r.get("best_response")),
                        dose=_dose_key(r.get("cart_dose_cells"), r.get("dose_level")))
    return out


def _limits(data: dict[str, dict], lloq: float) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Shared x limits (days), y limits (cells/µL, log; the top strip kept for the MRD calls) and the
    floor where CAR-T or NK samples with no cells are drawn."""
    xs = [v for d in data.values() for v in [*(c["day"] for c in d["cart"]), *(c["day"] for c in d["nk"]),
                                              *(day for day, _ in d["mrd"]), d["inf2"], d["prog"], d["fu"]]
          if math.isfinite(v)]
    lo_x, hi_x = min(xs + [0.0]), max(xs + [28.0])
    pad = 0.03 * (hi_x - lo_x)
    ys = [v for d in data.values() for v in [*(c["y"] for c in d["cart"]),
                                              *(v for c in d["nk"] for v in (c["y"], c["lo"], c["hi"]))]
          if math.isfinite(v) and v > 0]
    base = min(ys + ([lloq] if math.isfinite(lloq) and lloq > 0 else []) or [1.0])
    floor = base / 2
    top = max(ys + [base * 100])
    lo_y, hi_y = math.log10(floor / 2.2), math.log10(top * 2.0)
    hi_y += (hi_y - lo_y) * (1 - MRD_STRIP + 0.06) / (MRD_STRIP - 0.06)   # room above the data for the MRD row
    return (lo_x - pad, hi_x + pad), (10 ** lo_y, 10 ** hi_y), floor


def _draw_blood(ax: Axes, d: dict, pid: str, floor: float, used: dict[str, bool]) -> None:
    """CAR-T (one line per infusion, the second dashed; no cells: open triangle on the floor) and NK
    cells/µL (squares with their 95% CI; a tube without a count: a tick on the day axis)."""
    for inf in sorted({c["inf"] for c in d["cart"]}):
        pts = [c for c in d["cart"] if c["inf"] == inf]
        x = np.array([c["day"] for c in pts])
        y = np.array([c["y"] for c in pts])
        pos = y > 0
        ax.plot(x, np.where(pos, y, floor), ls="--" if inf >= 2 else "-", color=CART_COLOR, lw=1.2, zorder=3,
                gid=f"cart-{pid}-inf{inf}")
        ax.plot(x[pos], y[pos], ls="none", marker="o", ms=3.6, mfc=CART_COLOR, mec="white", mew=0.4, zorder=4)
        ax.plot(x[~pos], np.full((~pos).sum(), floor), ls="none", marker="v", ms=4.5, mfc="white", mec=CART_COLOR,
                mew=1.0, zorder=4)
        used["cart"] = True
        used["cart_inf2"] |= inf >= 2
        used["nd"] |= bool((~pos).any())
    counted = [c for c in d["nk"] if math.isfinite(c["y"])]
    if counted:
        x = np.array([c["day"] for c in counted])
        y = np.array([max(c["y"], floor) for c in counted])
        lo = np.array([c["lo"] if math.isfinite(c["lo"]) else c["y"] for c in counted])
        hi = np.array([c["hi"] if math.isfinite(c["hi"]) else c["y"] for c in counted])
        ax.plot(x, y, color=NK_COLOR, lw=1.0, zorder=3, gid=f"nk-{pid}")
        ax.vlines(x, np.maximum(lo, floor), np.maximum(hi, floor), color=NK_COLOR, lw=0.9, zorder=3)
        ax.plot(x, y, ls="none", marker="s", ms=3.8, mfc=NK_COLOR, mec="white", mew=0.4, zorder=4)
        used["nk"] = True
    uncounted = [c["day"] for c in d["nk"] if not math.isfinite(c["y"])]
    if uncounted:
        ax.plot(uncounted, [0.0] * len(uncounted), transform=blended_transform_factory(ax.transData, ax.transAxes),
                ls="none", marker=2, ms=7, mew=1.3, color=NK_COLOR, clip_on=False, zorder=5,
                gid=f"nk-uncounted-{pid}")
        used["nk_tube"] = True


def _draw_events(ax: Axes, d: dict, pid: str, xlim: tuple[float, float], used: dict[str, bool]) -> None:
    """Infusion 1 (day 0), the second infusion, progression, the time after follow-up (shaded) and the
    marrow MRD calls (top row)."""
    ax.axvline(0, color="#9a9a9a", lw=0.7, zorder=1, gid=f"inf1-{pid}")
    if math.isfinite(d["fu"]) and d["fu"] < xlim[1]:
        ax.axvspan(d["fu"], xlim[1], color=FOLLOW_UP_SHADE, lw=0, zorder=0)
        used["fu"] = True
    if math.isfinite(d["inf2"]):
        ax.axvline(d["inf2"], color=INF2_COLOR, ls="--", lw=1.1, zorder=2, gid=f"inf2-{pid}-day{d['inf2']:g}")
        used["inf2"] = True
    if math.isfinite(d["prog"]):
        ax.axvline(d["prog"], color=PROG_COLOR, lw=1.5, zorder=2, gid=f"progression-{pid}-day{d['prog']:g}")
        used["prog"] = True
    strip = blended_transform_factory(ax.transData, ax.transAxes)
    for day, status in d["mrd"]:
        ax.plot(day, MRD_STRIP, transform=strip, ls="none", zorder=6, clip_on=False,
                gid=f"mrd-{pid}-{status}-day{day:g}", **MRD_MARKS[status])
        used[f"mrd_{status}"] = True


def _draw_nkg2a(ax: Axes, d: dict, right_labels: bool) -> Axes | None:
    """NKG2A+ % of NK (every stained NK tube, counted or not) on a right-hand 0–100 % axis."""
    pts = [(c["day"], c["nkg2a"]) for c in d["nk"] if math.isfinite(c["nkg2a"])]
    tw = ax.twinx()
    tw.set_ylim(0, 100)
    tw.set_yticks([0, 50, 100])
    tw.spines["right"].set_visible(True)
    tw.spines["right"].set_color("#9a9a9a")
    tw.tick_params(axis="y", colors=NKG2A_COLOR, labelsize=7, labelright=right_labels)
    if right_labels:
        tw.set_ylabel("NKG2A+ % of NK", color=NKG2A_COLOR, fontsize=8)
    if pts:
        tw.plot([x for x, _ in pts], [v for _, v in pts], color=NKG2A_COLOR, ls=":", lw=1.0, marker="D", ms=3.2,
                mfc=NKG2A_COLOR, mec="white", mew=0.4, zorder=3)
    return tw


def _legend_sections(used: dict[str, bool], lloq: float) -> list[tuple[str, list[tuple[Any, str]]]]:
    blood: list[tuple[Any, str]] = []
    if used["cart"]:
        blood.append((Line2D([], [], color=CART_COLOR, lw=1.2, marker="o", ms=3.6, mec="white", mew=0.4),
                      "CAR-T cells"))
    if used["cart_inf2"]:
        blood.append((Line2D([], [], color=CART_COLOR, lw=1.2, ls="--"), "CAR-T after infusion 2"))
    if used["nd"]:
        blood.append((_marker("v", "white", edge=CART_COLOR, size=4.5, lw=1.0), "CAR-T not detected"))
    if used["nk"]:
        blood.append((Line2D([], [], color=NK_COLOR, lw=1.0, marker="s", ms=3.8, mec="white", mew=0.4),
                      "NK cells, 95% CI (Poisson)"))
    if used["nk_tube"]:
        blood.append((Line2D([], [], ls="none", marker=2, ms=7, mew=1.3, color=NK_COLOR), "NK tube without a count"))
    if math.isfinite(lloq) and lloq > 0:
        blood.append((Line2D([], [], color=MUTED, ls=":", lw=0.9), f"CAR-T LLOQ ({lloq:g}/µL)"))
    nkg2a = [(Line2D([], [], color=NKG2A_COLOR, ls=":", lw=1.0, marker="D", ms=3.2, mec="white", mew=0.4),
              "NKG2A+ % of NK")] if used["nkg2a"] else []
    mrd = [(_mrd_handle(s), s.replace("_", " ").capitalize()) for s in MRD_MARKS if used[f"mrd_{s}"]]
    events: list[tuple[Any, str]] = [(Line2D([], [], color="#9a9a9a", lw=0.7), "Infusion 1 (day 0)")]
    if used["inf2"]:
        events.append((Line2D([], [], color=INF2_COLOR, ls="--", lw=1.1), "Second infusion"))
    if used["prog"]:
        events.append((Line2D([], [], color=PROG_COLOR, lw=1.5), "Progression"))
    if used["fu"]:
        events.append((Patch(facecolor=FOLLOW_UP_SHADE, edgecolor="none"), "After follow-up"))
    return [("Blood, cells/µL (log)", blood), ("Right axis", nkg2a), ("Marrow MRD (top row)", mrd),
            ("Events", events)]


def _notes(data: dict[str, dict]) -> list[str]:
    """What the caption has to say about what is not drawn."""
    tubes = [c for d in data.values() for c in d["nk"]]
    notes = ["One panel per patient; days since infusion 1; title: best response · first dose."]
    if not any(d["cart"] for d in data.values()):
        notes.append("No CAR-T counts.")
    if not tubes:
        notes.append("No NK tubes: no NK counts or NKG2A % to show.")
    elif not any(math.isfinite(c["y"]) for c in tubes):
        why = sorted({c["reason"] for c in tubes if c["reason"]})
        notes.append("No NK cell counts: " + ("; ".join(why) if why else "no NK tube carried counting beads")
                     + ". Ticks on the day axis mark the NK tubes; NKG2A+ % is on the right axis.")
    elif any(not math.isfinite(c["y"]) for c in tubes):
        notes.append("Ticks on the day axis: NK tubes without a count (NKG2A+ % only).")
    if not any(d["mrd"] for d in data.values()):
        notes.append("No marrow MRD calls.")
    return notes


@_styled
def over_time_plot(patients: pd.DataFrame | None, kinetics: pd.DataFrame | None, nk: pd.DataFrame | None,
                   mrd: pd.DataFrame | None, stem: str | Path, *, lloq: float | None = None) -> list[Path]:
    """Small multiples, one panel per patient (sorted by ID) on a shared axis of days since infusion
    1 and a shared log axis of cells/µL blood: CAR-T cells (a line per infusion, the second dashed),
    host NK cells with their 95% CI (a tube without counting beads: a tick on the day axis),
    NKG2A+ % of NK on a right-hand axis, the marrow MRD calls along the top (open circle negative,
    filled positive, grey square not evaluable), infusion 1 (day 0), a second infusion (dashed
    purple line), progression (red line) and the time after follow-up (shaded). Missing tables or
    columns leave their part out, with a note under the panels."""
    title = "Course by patient: CAR-T and NK cells in blood, marrow MRD"
    data = course_data(patients, kinetics, nk, mrd)
    if not data:
        return _no_data(stem, title)
    lloq_v = _num(lloq)
    xlim, ylim, floor = _limits(data, lloq_v)
    pids = list(data)
    n = len(pids)
    ncols = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    nrows = math.ceil(n / ncols)
    width = max(7.8, 3.1 * ncols + 2.4)
    caption = textwrap.wrap(" ".join(_notes(data)), int(width * 16))
    fig = _new_figure(width, 1.0 + 1.95 * nrows)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    used = dict.fromkeys(("cart", "cart_inf2", "nd", "nk", "nk_tube", "nkg2a", "inf2", "prog", "fu",
                          *(f"mrd_{s}" for s in MRD_MARKS)), False)
    used["nkg2a"] = any(math.isfinite(c["nkg2a"]) for d in data.values() for c in d["nk"])
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        pid, d = pids[i], data[pids[i]]
        ax.set_yscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.yaxis.grid(True, which="major", color="#ececec", lw=0.6)
        ax.set_axisbelow(True)
        _draw_events(ax, d, pid, xlim, used)
        _draw_blood(ax, d, pid, floor, used)
        if math.isfinite(lloq_v) and lloq_v > 0:
            ax.axhline(lloq_v, color=MUTED, ls=":", lw=0.9, zorder=1)
        if used["nkg2a"]:
            _draw_nkg2a(ax, d, right_labels=(i % ncols == ncols - 1 or i == n - 1))
        ax.set_title(pid, loc="left", fontweight="bold", fontsize=9)
        ax.set_title(f"{d['resp'] or 'response n/a'} · {dose_display(d['dose'])}", loc="right", fontsize=7.5,
                     color=MUTED)
        if i + ncols >= n:  # the lowest panel of its column
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("Days since infusion 1")
    fig.supylabel("Cells/µL blood", fontsize=9.5)
    fig.suptitle(title, x=0.01, ha="left", fontweight="bold", fontsize=9.5)
    sections = _legend_sections(used, lloq_v)
    _legend(fig, sections)
    rows = sum(len(items) + 2 for _, items in sections if items) - 1   # entries, headers, gaps between
    fig.set_size_inches(width, max(fig.get_size_inches()[1], 0.6 + 0.175 * rows + 0.125 * len(caption)))
    fig.text(0.01, 0.01, "\n".join(caption), fontsize=7, color=MUTED, ha="left", va="bottom")
    _caption_space(fig, len(caption))
    return _save(fig, stem)
