"""CAR-T expansion and persistence in blood, per patient and infusion (:func:`kinetics_plot`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from mrdflow.cohort._plotkit import (
    INK,
    MUTED,
    _break_marks,
    _col,
    _dose_key,
    _frame,
    _legend,
    _marker,
    _new_figure,
    _no_data,
    _num,
    _save,
    _spread,
    _styled,
    _text,
    dose_color,
)
from mrdflow.formatting import dose_display, dose_from_label

__all__ = ["BREAK_DAY", "kinetics_plot"]

BREAK_DAY = 30.0   # the broken x axis: 0..BREAK_DAY wide, the rest narrow


def _measurements(k: pd.DataFrame) -> pd.DataFrame:
    """Columns pid, inf, day, y (cells/µL), lo/hi (95% CI) of the rows with a patient, a day and a
    value, sorted by patient, infusion and day."""
    d = pd.DataFrame({
        "pid": _col(k, "patient_id").map(_text),
        "inf": _col(k, "infusion").map(lambda v: int(_num(v)) if math.isfinite(_num(v)) else 1),
        "day": _col(k, "day").map(_num),
        "y": _col(k, "cells_per_ul").map(_num),
        "lo": _col(k, "cells_per_ul_ci95_low").map(_num),
        "hi": _col(k, "cells_per_ul_ci95_high").map(_num),
    })
    d = d[d["pid"].notna() & np.isfinite(d["day"].astype(float)) & np.isfinite(d["y"].astype(float))]
    return d.sort_values(["pid", "inf", "day"], kind="stable") if not d.empty else d


def _doses(p: pd.DataFrame, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str | None]:
    """Dose label of each (patient, infusion); a second infusion without its own dose has the first's."""
    dose: dict[tuple[str, int], str | None] = {}
    for _, r in p.iterrows() if not p.empty else []:
        pid = _text(r.get("patient_id"))
        if pid is None:
            continue
        d1 = _dose_key(r.get("cart_dose_cells"), r.get("dose_level"))
        d2 = _dose_key(r.get("infusion2_dose_cells"))
        dose[(pid, 1)] = d1
        dose[(pid, 2)] = d2 or d1
    return {key: dose.get(key, dose.get((key[0], 1))) for key in keys}


def _axes(fig: Figure, dmin: float, dmax: float, ylim: tuple[float, float], title: str) -> tuple[list[Axes], bool]:
    """One log-y axes, or two sharing y with the x axis broken at :data:`BREAK_DAY` when samples run
    past day 42; returns the axes and whether the axis is broken."""
    broken = dmax > 42
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
    return axes, broken


def _draw_series(axes: list[Axes], d: pd.DataFrame, doses: dict, floor: float,
                 broken: bool) -> tuple[list[dict], bool, bool]:
    """One line per (patient, infusion) on every axes: measured points, not-detected triangles on
    ``floor``, CI bars. Returns the peak labels to place, and whether any not-detected sample and
    any CI was drawn."""
    dose_set = set(doses.values())
    labels = []
    any_nd = any_ci = False
    for key in doses:
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
    return labels, any_nd, any_ci


def _label_peaks(labels: list[dict], ylim: tuple[float, float]) -> None:
    """Each line's label just above its peak, nudged apart (with a leader line when moved)."""
    lspan = math.log10(ylim[1]) - math.log10(ylim[0])
    lift = 0.045 * lspan  # labels sit just above their peak
    for lab in labels:
        lab["y"] += lift
    _spread(labels, 0.052 * lspan, lo=math.log10(ylim[0]) + 0.05 * lspan, hi=math.log10(ylim[1]) - 0.03 * lspan)
    for lab in labels:
        moved = abs(lab["y"] - math.log10(lab["py"]) - lift) > 0.015 * lspan
        xl = lab["ax"].get_xlim()
        lab["ax"].annotate(lab["text"], xy=(lab["px"], lab["py"]),
                           xytext=(lab["px"] + 0.015 * (xl[1] - xl[0]), 10 ** lab["y"]),
                           fontsize=7, color=lab["color"], fontweight="bold", ha="left", va="center", zorder=6,
                           annotation_clip=False,
                           bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7),
                           arrowprops=dict(arrowstyle="-", color=lab["color"], lw=0.5, shrinkA=0, shrinkB=3)
                           if moved else None)


def _legend_sections(doses: dict, any_nd: bool, any_ci: bool, lloq_v: float) -> list[tuple[str, list]]:
    """Legend: dose levels, infusions, sample marks (and the LLOQ line)."""
    dose_set = set(doses.values())
    dose_items = [(Line2D([], [], color=dose_color(lb, dose_set), lw=2, marker="o", ms=4.5, mec="white", mew=0.5),
                   dose_display(lb) if lb else "dose not reported")
                  for lb in sorted(dose_set, key=lambda s: (s is None, dose_from_label(s) if s else 0, s or ""))]
    infusion_items: list[tuple[Any, str]] = [(Line2D([], [], color=INK, lw=1.3, ls="-"), "Infusion 1")]
    if any(inf >= 2 for _, inf in doses):
        infusion_items.append((Line2D([], [], color=INK, lw=1.3, ls="--"), "Infusion 2"))
    mark_items = [(_marker("o", INK, edge="white", size=5, lw=0.5), "Measured")]
    if any_nd:
        mark_items.append((_marker("v", "white", size=5.5, lw=1.1), "Not detected (0, drawn at n.d.)"))
    if any_ci:
        mark_items.append((Line2D([], [], color=INK, lw=0.7, alpha=0.55, marker="|", ms=8, ls="none"), "95% CI"))
    if math.isfinite(lloq_v) and lloq_v > 0:
        mark_items.append((Line2D([], [], color=MUTED, ls=":", lw=1.0), f"LLOQ ({lloq_v:g} cells/µL)"))
    return [("Dose level (cells)", dose_items), ("Infusion", infusion_items), ("Samples", mark_items)]


@_styled
def kinetics_plot(kinetics: pd.DataFrame, patients: pd.DataFrame | None, stem: str | Path, *,
                  lloq: float | None = None) -> list[Path]:
    """CAR-T cells/µL (log) vs day since infusion: one line per patient and infusion (infusion 2
    dashed), coloured by that infusion's dose level; samples with no CAR-T cells (0) drawn as open
    triangles on a floor below the LLOQ; dotted LLOQ line when ``lloq`` (cells/µL) is given; 95% CI
    bars when the table carries them. When samples run past day 42 the x axis breaks at day 30 (days
    0–30 wide, the rest narrow)."""
    title = "CAR-T expansion and persistence in blood"
    k = _frame(kinetics)
    if k.empty or "patient_id" not in k.columns or "day" not in k.columns:
        return _no_data(stem, title)
    d = _measurements(k)
    if d.empty:
        return _no_data(stem, title, "no CAR-T measurements")
    keys = sorted(set(d[["pid", "inf"]].itertuples(index=False, name=None)))
    doses = _doses(_frame(patients), keys)   # (patient, infusion) -> dose label, in key order

    ypos = d["y"][d["y"] > 0]
    lloq_v = _num(lloq)
    lowest = float(ypos.min()) if len(ypos) else math.nan
    base = min([v for v in (lloq_v, lowest) if math.isfinite(v) and v > 0] or [2.0])
    floor = base / 2
    ymax = max(float(ypos.max()) if len(ypos) else base, lloq_v if math.isfinite(lloq_v) else 0, base)
    ylim = (floor / 2.2, ymax * 6.0)

    fig = _new_figure(7.8, 4.7)
    axes, broken = _axes(fig, float(d["day"].min()), float(d["day"].max()), ylim, title)
    labels, any_nd, any_ci = _draw_series(axes, d, doses, floor, broken)
    _label_peaks(labels, ylim)
    if math.isfinite(lloq_v) and lloq_v > 0:
        for ax in axes:
            ax.axhline(lloq_v, color=MUTED, ls=":", lw=1.0, zorder=1)
    if any_nd:
        for ax in axes:
            ax.axhline(floor, color="#bbbbbb", ls="-", lw=0.5, zorder=1)
        axes[-1].text(1.0, floor, " n.d.", transform=blended_transform_factory(axes[-1].transAxes, axes[-1].transData),
                      ha="left", va="center", fontsize=7, color=MUTED)
    _legend(fig, _legend_sections(doses, any_nd, any_ci, lloq_v))
    return _save(fig, stem)
