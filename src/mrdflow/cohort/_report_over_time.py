"""The cohort report's "Over time" section (:mod:`mrdflow.cohort._report`): each patient's course figure,
the MRD course and the NK course per patient (``patients.tsv``, :mod:`mrdflow.cohort._timeline`) and
the two timelines they come from (``mrd_timeline.tsv``, ``nk_timeline.tsv``). Every number is the
tables' own; none is recomputed here."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from mrdflow.cohort._report_data import ReportData
from mrdflow.cohort._report_html import (
    Raw,
    _col,
    _fixed,
    _missing,
    _not_available,
    _sorted,
    _status,
    _table,
    _text,
    _truthy,
)
from mrdflow.cohort._report_sections import _sensitivity
from mrdflow.cohort._timeline import SUSTAINED_DAYS
from mrdflow.formatting import finite_float, integer, is_missing, sci

__all__ = ["_sec_over_time", "MRD_COURSE_COLUMNS", "NK_COURSE_COLUMNS"]

#: The patients table's MRD-course columns the section reads (:func:`mrdflow.cohort.build_patients`).
MRD_COURSE_COLUMNS = ("mrd_n_assessments", "mrd_sustained_negative", "mrd_sustained_reason",
                      "mrd_negative_through_day", "mrd_best_depth", "mrd_best_depth_negative", "mrd_conversion_day",
                      "mrd_last_day", "mrd_last_status")
#: The patients table's NK-course columns the section reads.
NK_COURSE_COLUMNS = ("nk_n_samples", "nk_baseline_cells_per_ul", "nk_recovery_day", "nk_recovery_level",
                     "nk_recovery_reason", "nk_at_cart_peak", "nkg2a_pct_last", "nkg2a_pct_last_day",
                     "nkg2a_pct_change", "nkg2a_pct_min", "nkg2a_pct_max")


def _na(text: str) -> Raw:
    """Greyed text in a cell (a value that is not there, with why)."""
    return Raw(f'<span class="na">{html.escape(text)}</span>')


def _lacks(inp: ReportData, cols: Sequence[str], what: str) -> str | None:
    """A note when the patients table is missing or carries none of ``cols`` (a table from before
    these columns); None when it can be shown."""
    p = inp["patients"]
    if p is None:
        return _not_available(inp.label("patients"))
    if not set(cols) & set(p.columns):
        return _missing(f"Not available: {inp.label('patients')} has no {what} columns ({', '.join(cols[:3])}, …); "
                        "rerun the cohort stage.")
    return None


def _sustained(r: dict) -> Any:
    v = r.get("mrd_sustained_negative")
    if is_missing(v):
        return _na("not yet") if "too short" in _text(r.get("mrd_sustained_reason")) else None
    return "yes" if _truthy(v) else "no"


def _depth(r: dict) -> Any:
    d = finite_float(r.get("mrd_best_depth"))
    if d is None:
        return None
    neg = r.get("mrd_best_depth_negative")
    if is_missing(neg):
        return sci(d)
    return f"< {sci(d)} (negative)" if _truthy(neg) else f"{sci(d)} (positive)"


def _last(r: dict) -> Any:
    day, status = integer(r.get("mrd_last_day")), r.get("mrd_last_status")
    if day is None or is_missing(status):
        return None
    return Raw(f"day {html.escape(day)}: " + _status(status, "mrd"))


def _mrd_course(inp: ReportData) -> str:
    note = _lacks(inp, MRD_COURSE_COLUMNS, "MRD-course")
    if note:
        return note
    p = inp["patients"]
    rows = []
    for r in _sorted(p, ["patient_id"]).to_dict("records"):
        rows.append([r.get("patient_id"), _col(p, r, "mrd_n_assessments", integer), _sustained(r),
                     _col(p, r, "mrd_sustained_reason"), _col(p, r, "mrd_negative_through_day", integer), _depth(r),
                     _col(p, r, "mrd_conversion_day", integer), _last(r)])
    headers = ["Patient", "Assessments", "Sustained MRD-negative", "Why", "Negative through day", "Best depth",
               "Conversion day", "Last assessment"]
    return (_table(headers, rows, num=[1, 4, 6])
            + '\n<p class="note">Post-infusion marrow assessments (day ≥ 1; a not-evaluable sample is no '
              "assessment). Sustained MRD negativity (IMWG 2016): negative at two assessments at least "
              f"{SUSTAINED_DAYS} days apart with no positive one between; \"not yet\" while follow-up is too short "
              "to tell. Negative through day: the day of the latest assessment when it is negative. Best depth: "
              "the smallest sensitivity of a negative call (\"&lt; sensitivity\"), else the lowest positive level. "
              "Conversion day: the first negative assessment after the last positive one (the baseline marrow "
              "counts as disease). Days since infusion 1.</p>")


def _nkg2a_course(p: pd.DataFrame, r: dict) -> Any:
    base = finite_float(r.get("baseline_nkg2a_pct")) if "baseline_nkg2a_pct" in p.columns else None
    last, day = finite_float(r.get("nkg2a_pct_last")), integer(r.get("nkg2a_pct_last_day"))
    if last is None:
        return None if base is None else f"{base:.1f} → NA"
    return f"{'NA' if base is None else f'{base:.1f}'} → {last:.1f}" + (f" (day {day})" if day is not None else "")


def _at_peak(r: dict) -> Any:
    v = finite_float(r.get("nk_at_cart_peak"))
    if v is None:
        return None
    tmax = integer(r.get("cart_tmax_day"))
    return f"{v:.1f}" + (f" (day {tmax})" if tmax is not None else "")


def _signed(v: Any) -> str | None:
    f = finite_float(v)
    return None if f is None else f"{f:+.1f}"


def _range(r: dict) -> Any:
    lo, hi = finite_float(r.get("nkg2a_pct_min")), finite_float(r.get("nkg2a_pct_max"))
    return None if lo is None or hi is None else f"{lo:.1f}–{hi:.1f}"


def _nk_course(inp: ReportData) -> str:
    note = _lacks(inp, NK_COURSE_COLUMNS, "NK-course")
    if note:
        return note
    p = inp["patients"]
    rows = []
    for r in _sorted(p, ["patient_id"]).to_dict("records"):
        rows.append([r.get("patient_id"), _col(p, r, "nk_n_samples", integer),
                     _col(p, r, "nk_baseline_cells_per_ul", _fixed(1)), _col(p, r, "nk_recovery_day", integer),
                     _col(p, r, "nk_recovery_level", _fixed(1)), _col(p, r, "nk_recovery_reason"), _at_peak(r),
                     _nkg2a_course(p, r), _col(p, r, "nkg2a_pct_change", _signed),
                     _range(r)])
    headers = ["Patient", "NK tubes", "Baseline NK cells/µL", "NK recovery day", "Recovery level (cells/µL)", "Why",
               "NK cells/µL at the CAR-T peak (day)", "NKG2A+ % of NK: baseline → last (day)", "Change (points)",
               "NKG2A+ % range"]
    return (_table(headers, rows, num=[1, 2, 3, 4, 8])
            + '\n<p class="note">Host NK cells in blood (NK tube). Baseline: the latest NK tube before infusion 1. '
              "NK recovery day: the first post-infusion day the NK count reaches the recovery level (config "
              "<code>cohort.nk_recovery</code>: a fraction of the baseline count, or an absolute level); the why "
              "column says how the level was set, or why there is no recovery day. NK at the CAR-T peak: "
              "interpolated (log-linear) between the NK counts either side of the CAR-T Tmax. NKG2A change: last "
              "minus baseline, in percentage points. Days since infusion 1.</p>")


def _review_kept(df: pd.DataFrame, spec: list) -> list:
    """``spec`` without the review column unless a row of ``df`` carries a review flag."""
    return [s for s in spec if s[0] in df.columns and (s[0] != "review" or any(_truthy(v) for v in df["review"]))]


def _mrd_timeline(inp: ReportData, required: float | None) -> str:
    m = inp["mrd"]
    if m is None:
        return _not_available(inp.label("mrd"))
    m = _sorted(m, ["patient_id", "day_since_infusion1", "sample_id"])
    spec = _review_kept(m, [("patient_id", "Patient"), ("sample_id", "Sample"), ("visit", "Visit"),
                            ("day_since_infusion1", "Day since infusion 1"), ("mrd_status", "Status"),
                            ("mrd_level", "MRD level (fraction)"), ("sensitivity", "Sensitivity"),
                            ("reason", "Reason"), ("review", "Review (unsure gate)")])
    fmts: dict[str, Callable[[Any], Any]] = {"day_since_infusion1": integer, "mrd_level": sci,
                                             "sensitivity": lambda v: _sensitivity(v, required)}
    rows = []
    for r in m.to_dict("records"):
        row = []
        for c, _ in spec:
            if c == "mrd_status":
                row.append(_status(r.get(c), "mrd"))
            elif c == "mrd_level" and is_missing(r.get(c)) and r.get("mrd_status") == "negative":
                row.append(_na("< LOD"))
            else:
                row.append(_col(m, r, c, fmts.get(c)))
        rows.append(row)
    return _table([h for _, h in spec], rows, num=[i for i, (c, _) in enumerate(spec)
                                                   if c in ("day_since_infusion1", "mrd_level")])


def _nk_count(r: dict) -> Any:
    v = finite_float(r.get("nk_cells_per_ul"))
    if v is None:
        why = r.get("nk_count_reason")
        return _na("no count" + (f": {_text(why)}" if not is_missing(why) and _text(why) else ""))
    lo, hi = finite_float(r.get("nk_cells_per_ul_ci95_low")), finite_float(r.get("nk_cells_per_ul_ci95_high"))
    return f"{v:.1f}" + (f" ({lo:.1f}–{hi:.1f})" if lo is not None and hi is not None else "")


def _nk_timeline(inp: ReportData) -> str:
    nk = inp["nk"]
    if nk is None:
        return _not_available(inp.label("nk"))
    nk = _sorted(nk, ["patient_id", "day_since_infusion1", "sample_id"])
    spec = _review_kept(nk, [("patient_id", "Patient"), ("sample_id", "Sample"), ("visit", "Visit"),
                             ("day_since_infusion1", "Day since infusion 1"),
                             ("nk_cells_per_ul", "NK cells/µL (95% CI)"), ("nk_pct_lymph", "NK % of lymphocytes"),
                             ("nk_bright_pct_of_nk", "CD56bright % of NK"), ("nkg2a_pct", "NKG2A+ % of NK"),
                             ("nkg2a_pct_bright", "NKG2A+ % of CD56bright"), ("nkg2a_pct_dim", "NKG2A+ % of CD56dim"),
                             ("review", "Review (unsure gate)")])
    text = ("patient_id", "sample_id", "visit", "review")
    fmts: dict[str, Callable[[Any], Any]] = {c: _fixed(1) for c, _ in spec if c not in text}
    fmts["day_since_infusion1"] = integer
    rows = [[_nk_count(r) if c == "nk_cells_per_ul" else _col(nk, r, c, fmts.get(c)) for c, _ in spec]
            for r in nk.to_dict("records")]
    out = [_table([h for _, h in spec], rows,
                  num=[i for i, (c, _) in enumerate(spec) if c not in text and c != "nk_cells_per_ul"])]
    if nk.empty:
        out.append('<p class="note">No stained NK tubes.</p>')
    elif "nk_cells_per_ul" not in nk.columns or not any(finite_float(v) is not None for v in nk["nk_cells_per_ul"]):
        out.append('<p class="note">No NK tube has a count: NK cells/µL need counting beads in the NK tube; '
                   "these tubes give the NK subsets and NKG2A+ % only.</p>")
    return "\n".join(out)


def _sec_over_time(inp: ReportData, fig_html: str, required: float | None) -> str:
    """The "Over time" section: the course figure, the MRD and NK courses per patient, both timelines."""
    return "\n".join([
        '<p class="note">Each patient over time, in days since the first CAR-T infusion: marrow MRD at every '
        "assessment and the host NK compartment in blood, with CAR-T kinetics for reference.</p>",
        fig_html,
        "<h3>MRD course per patient</h3>", _mrd_course(inp),
        "<h3>NK course per patient</h3>", _nk_course(inp),
        "<h3>MRD timeline (every marrow sample)</h3>", _mrd_timeline(inp, required),
        "<h3>NK timeline (every stained NK tube)</h3>", _nk_timeline(inp),
    ])
