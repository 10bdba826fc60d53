"""CAR-T pharmacokinetics from serial absolute counts (brief section 4), as pure functions.

Days are days since the infusion (day 0 = infusion); concentrations are CAR-T cells/µL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Kinetics", "kinetics"]


@dataclass(frozen=True)
class Kinetics:
    """cmax (cells/µL), tmax_day, auc_0_28 (cells/µL × day, linear trapezoid over days 0–28, with the
    day-28 value interpolated when day 28 was not sampled), persistence_day (last day with a count ≥
    LLOQ; None if never), n_points, auc_complete (False when sampling stops before day 28),
    fall_rate_per_day: how fast the counts fall after the peak, the first-order rate k (1/day) of
    C(t) ~ exp(-k t) fitted by least squares to ln(cells/µL) from Tmax on, over the counts at or
    above the LLOQ (None with fewer than 3 such points; ln 2 / k is the half-life in days)."""

    cmax: float | None
    tmax_day: float | None
    auc_0_28: float | None
    persistence_day: float | None
    n_points: int
    auc_complete: bool
    fall_rate_per_day: float | None = None


def kinetics(days: Sequence[float], cells_per_ul: Sequence[float | None], *, lloq: float = 1.0,
             window: float = 28.0) -> Kinetics:
    """Cmax, Tmax, AUC0–window and persistence for one infusion's serial samples.

    Missing values (None/NaN) are skipped. ``lloq``: the assay's lower limit of quantification in
    cells/µL (persistence threshold).
    """
    d = np.asarray(days, dtype=float)
    c = np.asarray([np.nan if v is None else v for v in cells_per_ul], dtype=float)
    ok = np.isfinite(d) & np.isfinite(c)
    d, c = d[ok], c[ok]
    if d.size == 0:
        return Kinetics(None, None, None, None, 0, False)
    order = np.argsort(d, kind="stable")
    d, c = d[order], c[order]
    i = int(np.argmax(c))
    above = d[c >= lloq]
    persistence = float(above.max()) if above.size else None
    auc = None
    complete = bool(d.min() <= 0 and d.max() >= window)
    in_win = (d >= 0) & (d <= window)
    if in_win.sum() >= 2:
        dd, cc = d[in_win], c[in_win]
        if complete and dd.max() < window:
            dd = np.append(dd, window)
            cc = np.append(cc, np.interp(window, d, c))
        auc = float(np.trapezoid(cc, dd))
    post = (d >= d[i]) & (c >= lloq) & (c > 0)
    fall = float(-np.polyfit(d[post], np.log(c[post]), 1)[0]) if post.sum() >= 3 else None
    return Kinetics(float(c[i]), float(d[i]), auc, persistence, int(d.size), complete, fall)
