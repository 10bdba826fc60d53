"""Week-4 bone-marrow MRD per patient (:func:`mrd_plot`)."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import matplotlib.ticker
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from mrdflow.cohort._plotkit import (
    IMWG_MRD,
    INK,
    MUTED,
    _col,
    _frame,
    _legend,
    _marker,
    _new_figure,
    _no_data,
    _num,
    _response,
    _response_color,
    _response_items,
    _save,
    _styled,
    _text,
)
from mrdflow.formatting import sci_short, unicode_minus

__all__ = ["mrd_plot"]


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


def _week4_results(m: pd.DataFrame, p: pd.DataFrame) -> tuple[dict[str, str | None], set[str], list[dict]]:
    """Best response by patient, every patient ID, and the week-4 results (pid, status, level, sens,
    reason, day): from ``m`` (visit 'week4'), else from the patients table's ``w4_*`` columns."""
    resp: dict[str, str | None] = {}
    ids: set[str] = set()
    for _, r in p.iterrows():
        pid = _text(r.get("patient_id"))
        if pid:
            ids.add(pid)
            resp[pid] = _response(r.get("best_response"))
    res: list[dict] = []
    if not m.empty and "patient_id" in m.columns:
        vis = _col(m, "visit").map(lambda v: (_text(v) or "").lower().replace("-", "").replace("_", "")
                                   .replace(" ", ""))
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
    return resp, ids, res


def _draw_result(ax: Axes, x: float, r: dict, color: str, bottom: float) -> None:
    """One week-4 result at ``x``: its marker and label (``bottom``: where one without a value sits)."""
    st = r["status"]
    if st == "positive" and math.isfinite(r["level"]) and r["level"] > 0:
        yv, label = r["level"], unicode_minus(sci_short(r["level"]))
        ax.plot(x, yv, marker="o", ms=9, mfc=color, mec=INK, mew=0.9, ls="none", zorder=4)
    elif st == "positive":
        yv, label = (r["sens"] if math.isfinite(r["sens"]) else bottom), "positive,\nlevel n/a"
        ax.plot(x, yv, marker="o", ms=9, mfc=color, mec=INK, mew=0.9, ls="none", zorder=4)
    elif st == "negative":
        known = math.isfinite(r["sens"]) and r["sens"] > 0
        yv = r["sens"] if known else bottom
        label = "<" + unicode_minus(sci_short(r["sens"])) if known else "neg.\nsens. n/a"
        ax.plot(x, yv, marker="v", ms=9.5, mfc=color, mec=INK, mew=0.9, ls="none", zorder=4)
    else:
        known = math.isfinite(r["sens"]) and r["sens"] > 0
        yv = r["sens"] if known else bottom
        label = "\n".join(textwrap.wrap(_abbrev_reason(r["reason"]), 10))
        ax.plot(x, yv, marker="x", ms=8.5, mec="#7f7f7f", mew=2.0, ls="none", zorder=4)
    ax.annotate(label, xy=(x, yv), xytext=(0, -9 if st != "positive" else 9), textcoords="offset points",
                ha="center", va="top" if st != "positive" else "bottom", fontsize=6.8,
                color=INK if st != "not_evaluable" else MUTED, linespacing=1.0)


@_styled
def mrd_plot(mrd: pd.DataFrame | None, patients: pd.DataFrame | None, stem: str | Path) -> list[Path]:
    """Week-4 marrow MRD per patient (patients on x, sorted by ID; log y): positive = filled circle
    at the MRD level, negative = downward triangle at the sensitivity reached (labelled '<sens'),
    not evaluable = grey cross at the sensitivity (or at the bottom when unknown) with the reason in
    short; dashed line at 10⁻⁵ (IMWG). Colour = best response. Week-4 rows come from ``mrd``
    (visit 'week4'); a patient without one there falls back to the patients table's ``w4_*``."""
    title = "Week-4 bone-marrow MRD (NGF)"
    resp, ids, res = _week4_results(_frame(mrd), _frame(patients))
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
            used.add(r["status"])
            _draw_result(ax, x, r, _response_color(resp.get(pid)), bottom)
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
