"""Baseline NKG2A on NK cells against CAR-T exposure, one labelled point per patient (:func:`nkg2a_auc_plot`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrdflow.cohort._plotkit import (
    INK,
    MUTED,
    _caption_space,
    _col,
    _frame,
    _get,
    _legend,
    _new_figure,
    _no_data,
    _num,
    _response,
    _response_color,
    _response_items,
    _save,
    _spread,
    _styled,
    _text,
)
from mrdflow.formatting import p_relation, unicode_minus

__all__ = ["nkg2a_auc_plot"]

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
        parts.append(f"{method + ' ' if method else ''}p {p_relation(pv)}")
    nn = _num(_get(assoc, "n"))
    if math.isfinite(nn):
        parts.append(f"n = {int(nn)}")
    return unicode_minus(", ".join(parts)) + " — exploratory"


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
