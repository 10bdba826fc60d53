"""The swimmer plot: follow-up, best response and events per patient (:func:`swimmer_plot`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.transforms import blended_transform_factory

from mrdflow.cohort._plotkit import (
    INK,
    MONTH_DAYS,
    MRD_MARKS,
    MUTED,
    RESPONDERS,
    _caption_space,
    _col,
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
    _response_color,
    _response_items,
    _save,
    _styled,
    _text,
)
from mrdflow.formatting import NOT_AVAILABLE, dose_display

__all__ = ["swimmer_plot"]

_BAR_H = 0.58   # bar height (one row = 1 unit of y)


def _months_between(a: pd.Timestamp | None, b: pd.Timestamp | None) -> float:
    if a is None or b is None:
        return math.nan
    return (b - a).days / MONTH_DAYS


def _mrd_marks(m: pd.DataFrame, pid: str, offsets: dict[str, float]) -> list[tuple[float, str]]:
    """(months since infusion 1, status) of the patient's marrow MRD results after infusion 1, each
    at its own time (the MRD timeline's ``day_since_infusion1``; else its ``day`` moved by its
    infusion's offset, ``offsets``: :func:`_infusion_offsets`)."""
    samples: list[tuple[float, str]] = []
    if not m.empty and "patient_id" in m.columns:
        sub = m[_col(m, "patient_id").astype(object).map(_text) == pid]
        for _, s in sub.iterrows():
            day = _day_since_infusion1(s, offsets)
            status = (_text(s.get("mrd_status")) or "").lower()
            if day > 0 and status in ("negative", "positive", "not_evaluable"):
                samples.append((day / MONTH_DAYS, status))
    return sorted(samples)


def _swimmer_rows(p: pd.DataFrame, m: pd.DataFrame, cut: pd.Timestamp | None) -> list[dict]:
    """One dict per patient: follow-up ``fu`` (months), response, progression (``prog_m``, months),
    second infusion (``inf2``, months), MRD marks, whether the response is ongoing, the dose/LD note."""
    rows = []
    offsets = _infusion_offsets(p)
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
        samples = _mrd_marks(m, pid, offsets)
        ld = _text(r.get("lymphodepletion"))
        dose = _dose_key(r.get("cart_dose_cells"), r.get("dose_level"))
        rows.append(dict(pid=pid, fu=fu, resp=resp, prog=prog, prog_m=prog_m, inf2=inf2, mrd=samples,
                         ongoing=(not prog and not dead and resp in RESPONDERS and math.isfinite(fu)),
                         note=f"{dose_display(dose)} · {ld + ' LD' if ld else 'LD ' + NOT_AVAILABLE}"))
    return rows


def _draw_row(ax: Axes, y: int, d: dict, xmax: float, used: dict[str, bool], label_tf: Any) -> None:
    """Patient ``d``'s bar (or a note when follow-up is missing), ongoing arrow, response label, MRD
    marks, second infusion, progression and the ID/dose labels left of the axis, on row ``y``."""
    arrow = 0.045 * xmax
    fu = d["fu"]
    if math.isfinite(fu):
        ax.barh(y, fu, height=_BAR_H, left=0, color=_response_color(d["resp"]), edgecolor="#444444",
                linewidth=0.6, zorder=2, gid=f"bar-{d['pid']}")
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
        ax.text(end + 0.012 * xmax, y, d["resp"] or NOT_AVAILABLE, va="center", ha="left", fontsize=7.5,
                color=INK if d["resp"] else MUTED)
    for mo, status in d["mrd"]:
        used[f"mrd_{status}"] = True
        gid = f"mrd-{d['pid']}-{status}-day{round(mo * MONTH_DAYS):d}"  # names the mark in the SVG
        ax.plot(mo, y, zorder=4, ls="none", gid=gid, **MRD_MARKS[status])
    if math.isfinite(d["inf2"]):
        used["inf2"] = True
        ax.plot(d["inf2"], y - _BAR_H / 2 - 0.02, marker="v", ms=7.5, mfc="#7b3294", mec="white", mew=0.6,
                zorder=5, ls="none", clip_on=False)
    if math.isfinite(d["prog_m"]):
        used["prog"] = True
        ax.plot(d["prog_m"], y, marker="X", ms=9, mfc=INK, mec="white", mew=0.8, zorder=6, ls="none")
    ax.text(-0.012, y - 0.13, d["pid"], transform=label_tf, ha="right", va="center", fontsize=9,
            fontweight="bold", color=INK)
    ax.text(-0.012, y + 0.22, d["note"], transform=label_tf, ha="right", va="center", fontsize=6.5,
            color=MUTED)


def _event_items(used: dict[str, bool]) -> list[tuple[Any, str]]:
    """Legend entries of the events drawn."""
    events: list[tuple[Any, str]] = []
    for status in ("negative", "positive", "not_evaluable"):
        if used[f"mrd_{status}"]:
            events.append((_mrd_handle(status), f"MRD {status.replace('_', ' ')}"))
    if used["inf2"]:
        events.append((_marker("v", "#7b3294", edge="white", size=7.5, lw=0.6), "Second infusion"))
    if used["prog"]:
        events.append((_marker("X", INK, edge="white", size=9, lw=0.8), "Progression"))
    if used["ongoing"]:
        events.append((_marker(r"$\rightarrow$", INK, edge=INK, size=11, lw=0.3), "Response ongoing"))
    return events


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
    cut = _date(data_cut)
    rows = _swimmer_rows(p, _frame(mrd), cut)
    if not rows:
        return _no_data(stem, title)
    rows.sort(key=lambda d: (-(d["fu"] if math.isfinite(d["fu"]) else -1.0), d["pid"]))

    n = len(rows)
    xs = [d["fu"] for d in rows] + [d["inf2"] for d in rows] + [d["prog_m"] for d in rows]
    xs += [mm for d in rows for mm, _ in d["mrd"]]
    xs = [x for x in xs if math.isfinite(x)]
    xmax = max(xs + [1.0])
    fig = _new_figure(7.6, 1.35 + 0.46 * n)
    ax = fig.add_subplot()
    used = {"mrd_negative": False, "mrd_positive": False, "mrd_not_evaluable": False,
            "inf2": False, "prog": False, "ongoing": False}
    label_tf = blended_transform_factory(ax.transAxes, ax.transData)
    for y, d in enumerate(rows):
        _draw_row(ax, y, d, xmax, used, label_tf)
    ax.set_ylim(n - 0.5, -0.65)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlim(0, xmax * 1.16)
    ax.set_xlabel("Months since first infusion")
    ax.xaxis.grid(True, color="#e6e6e6", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.set_title(title, loc="left", fontweight="bold")

    events = _event_items(used)
    _legend(fig, [("Best response", _response_items(d["resp"] for d in rows)), ("Events", events)])
    notes = ["Bars: follow-up from infusion 1; label at bar end = best response; LD = lymphodepletion."]
    if cut is not None:
        notes.append(f"Data cut-off {cut.date().isoformat()}.")
    fig.text(0.01, 0.01, " ".join(notes), fontsize=7, color=MUTED, ha="left", va="bottom",
             wrap=False, in_layout=True)
    _caption_space(fig)
    return _save(fig, stem)
