"""Read-outs over time, per patient: the course of MRD and of the host NK compartment.

Pure functions on a patient's time points (days since infusion 1), so they test without files;
:func:`mrdflow.cohort.build_patients` feeds them from the samples' ``metrics.json``.

MRD (:func:`mrd_course`), over the post-infusion marrow assessments (day ≥ 1; a ``not_evaluable``
call is no assessment):

- ``sustained_negative`` (IMWG 2016, Kumar et al., Lancet Oncol 2016: MRD negativity in the marrow
  by next-generation flow, confirmed by a second negative assessment at least one year after the
  first, with no positive one in between): True when two such negatives exist; False when a
  positive assessment follows the first negative one and no later pair confirms it, or when a
  negative run ended in a positive; None (with the reason) while follow-up is too short to tell.
- ``negative_through_day``: when the latest assessment is negative, the day of that assessment
  (the patient is MRD-negative through it); None otherwise.
- ``best_depth``: the deepest negativity reached (the smallest sensitivity of a negative call,
  e.g. 4.5e-6 for "< 4.5e-6"), or without a negative call the lowest positive level.
- ``conversion_day``: the day of the first negative assessment after the last positive one (a
  baseline marrow is disease, so a patient negative from the first assessment converts then);
  None while the latest assessment is positive.

NK (:func:`nk_course`), over the stained NK tubes:

- ``recovery_day``: the first post-infusion day whose NK cells/µL reach the configured level:
  ``fraction_of_baseline`` × the baseline count, or ``cells_per_ul`` (absolute); None, with the
  reason, when no count reaches it or the level cannot be set (no baseline count).
- ``at_cart_peak``: NK cells/µL on the day of the CAR-T peak (Tmax), interpolated log-linearly
  between the NK counts either side (None outside the counted range).
- the NKG2A+ % trajectory: at baseline, the last value, their difference (points), minimum and
  maximum, and the day of the last value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MRDAssessment", "MRDCourse", "NKPoint", "NKCourse", "mrd_course", "nk_course", "SUSTAINED_DAYS"]

#: IMWG 2016 sustained MRD negativity: two negative assessments at least this many days apart.
SUSTAINED_DAYS = 365


@dataclass(frozen=True)
class MRDAssessment:
    """One marrow MRD call: ``day`` since infusion 1, ``status`` (negative / positive /
    not_evaluable), ``level`` (aberrant PCs / nucleated cells, fraction; None below LOD) and
    ``sensitivity`` (LOD / nucleated cells, fraction)."""

    day: int
    status: str
    level: float | None = None
    sensitivity: float | None = None


@dataclass(frozen=True)
class MRDCourse:
    """A patient's MRD over time (module docstring). Days are days since infusion 1; depth and
    levels are fractions of nucleated cells."""

    n_assessments: int
    sustained_negative: bool | None
    sustained_reason: str
    negative_through_day: int | None
    best_depth: float | None
    best_depth_negative: bool | None
    conversion_day: int | None
    last_day: int | None
    last_status: str | None


def _finite(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def mrd_course(assessments: Sequence[MRDAssessment], *, follow_up_days: float | None = None,
               sustained_days: int = SUSTAINED_DAYS) -> MRDCourse:
    """The MRD course of one patient from its marrow calls (any order; see the module docstring).
    ``follow_up_days``: days from infusion 1 to the last follow-up (tells "not yet" from "not
    met" for sustained negativity)."""
    calls = sorted((a for a in assessments if a.day >= 1 and a.status in ("negative", "positive")),
                   key=lambda a: a.day)
    if not calls:
        return MRDCourse(0, None, "no evaluable post-infusion marrow", None, None, None, None, None, None)
    last = calls[-1]
    # sustained: a negative at day d and a later negative at >= d + sustained_days, no positive between
    sustained, first_neg = False, None
    for i, a in enumerate(calls):
        if a.status != "negative":
            continue
        first_neg = a.day if first_neg is None else first_neg
        for b in calls[i + 1:]:
            if b.status == "positive":
                break
            if b.day - a.day >= sustained_days:
                sustained = True
                break
        if sustained:
            break
    if sustained:
        verdict, why = True, f"negative at two assessments ≥ {sustained_days} days apart"
    elif first_neg is None:
        verdict, why = False, "never MRD-negative"
    elif any(a.status == "positive" and a.day > first_neg for a in calls):
        verdict, why = False, "a positive assessment followed the first negative one"
    else:
        horizon = first_neg + sustained_days
        if follow_up_days is not None and follow_up_days >= horizon:
            verdict, why = False, f"no negative assessment ≥ {sustained_days} days after the first (day {first_neg})"
        else:
            verdict, why = None, (f"follow-up too short: negative since day {first_neg}, confirmation due by day "
                                  f"{horizon}")
    negs = [a for a in calls if a.status == "negative"]
    sens = [s for s in (_finite(a.sensitivity) for a in negs) if s is not None]
    levels = [v for v in (_finite(a.level) for a in calls if a.status == "positive") if v is not None]
    if negs:
        depth, depth_neg = (min(sens) if sens else None), True
    else:
        depth, depth_neg = (min(levels) if levels else None), False
    last_pos = max((a.day for a in calls if a.status == "positive"), default=None)
    after = [a.day for a in negs if last_pos is None or a.day > last_pos]
    return MRDCourse(
        n_assessments=len(calls),
        sustained_negative=verdict,
        sustained_reason=why,
        negative_through_day=last.day if last.status == "negative" else None,
        best_depth=depth,
        best_depth_negative=depth_neg,
        conversion_day=min(after) if after and last.status == "negative" else None,
        last_day=last.day,
        last_status=last.status,
    )


@dataclass(frozen=True)
class NKPoint:
    """One stained NK tube: ``day`` since infusion 1, NK ``cells_per_ul`` (None without counting
    beads) and ``nkg2a_pct`` (NKG2A+ % of NK)."""

    day: int
    cells_per_ul: float | None = None
    nkg2a_pct: float | None = None


@dataclass(frozen=True)
class NKCourse:
    """A patient's host NK compartment over time (module docstring); cells/µL, %, days since
    infusion 1."""

    n_points: int
    baseline_cells_per_ul: float | None
    recovery_day: int | None
    recovery_level: float | None
    recovery_reason: str
    at_cart_peak: float | None
    nkg2a_pct_baseline: float | None
    nkg2a_pct_last: float | None
    nkg2a_pct_last_day: int | None
    nkg2a_pct_change: float | None
    nkg2a_pct_min: float | None
    nkg2a_pct_max: float | None


def _at(points: Sequence[tuple[int, float]], day: float) -> float | None:
    """Log-linear interpolation of positive counts at ``day`` between the points either side."""
    for (d0, v0), (d1, v1) in zip(points, points[1:], strict=False):
        if d0 <= day <= d1:
            if d1 == d0 or v0 <= 0 or v1 <= 0:
                return v0 if day == d0 else v1 if day == d1 else (v0 + v1) / 2
            t = (day - d0) / (d1 - d0)
            return math.exp(math.log(v0) + t * (math.log(v1) - math.log(v0)))
    if points and points[-1][0] == day:
        return points[-1][1]
    return None


def nk_course(points: Sequence[NKPoint], *, cart_peak_day: float | None = None,
              fraction_of_baseline: float | None = 0.5, cells_per_ul: float | None = None) -> NKCourse:
    """The NK course of one patient (module docstring). The baseline is the latest point before
    infusion 1 (day ≤ 0). The recovery level is ``cells_per_ul`` when given, else
    ``fraction_of_baseline`` × the baseline count."""
    pts = sorted(points, key=lambda p: p.day)
    pre = [p for p in pts if p.day <= 0]
    post = [p for p in pts if p.day > 0]
    base = pre[-1] if pre else None
    base_count = _finite(base.cells_per_ul) if base else None
    if cells_per_ul is not None:
        level, how = float(cells_per_ul), f"{cells_per_ul:g} NK cells/µL"
    elif fraction_of_baseline is not None and base_count is not None:
        level, how = fraction_of_baseline * base_count, f"{fraction_of_baseline:g} × baseline ({base_count:.1f}/µL)"
    else:
        level, how = None, ""
    counted = [(p.day, c) for p in post for c in [_finite(p.cells_per_ul)] if c is not None]
    if level is None:
        day, why = None, ("no baseline NK count to set the recovery level" if fraction_of_baseline is not None
                          else "no recovery level configured")
    elif not counted:
        day, why = None, "no post-infusion NK count"
    else:
        day = next((d for d, c in counted if c >= level), None)
        why = f"first day ≥ {how}" if day is not None else f"not reached {how} by day {counted[-1][0]}"
    series = ([(base.day, base_count)] if base_count is not None else []) + counted
    peak = _finite(cart_peak_day)
    nkg = [(p.day, v) for p in pts for v in [_finite(p.nkg2a_pct)] if v is not None]
    base_nkg = _finite(base.nkg2a_pct) if base else None
    last = nkg[-1] if nkg else None
    return NKCourse(
        n_points=len(pts),
        baseline_cells_per_ul=base_count,
        recovery_day=day,
        recovery_level=level,
        recovery_reason=why,
        at_cart_peak=_at(series, peak) if peak is not None else None,
        nkg2a_pct_baseline=base_nkg,
        nkg2a_pct_last=last[1] if last else None,
        nkg2a_pct_last_day=last[0] if last else None,
        nkg2a_pct_change=(last[1] - base_nkg) if last and base_nkg is not None and last[0] > 0 else None,
        nkg2a_pct_min=min(v for _, v in nkg) if nkg else None,
        nkg2a_pct_max=max(v for _, v in nkg) if nkg else None,
    )
