"""The cohort report's sections on the trial's read-outs (:mod:`mrdflow.cohort._report`): summary,
Table 1, response, MRD, NK/NKG2A, CAR-T kinetics, associations and the figures (the "Over time"
section is ``_report_over_time``). Every number comes
from the cohort tables as they are; none is recomputed here."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mrdflow.cohort._outputs import COHORT_FIGURES
from mrdflow.cohort._report_data import ReportData
from mrdflow.cohort._report_html import (
    Raw,
    _col,
    _fixed,
    _h,
    _missing,
    _not_available,
    _sorted,
    _status,
    _table,
    _text,
    _truthy,
)
from mrdflow.cohort._tables import RESPONSES, table1_html
from mrdflow.formatting import NA, dose_label, finite_float, integer, is_missing, p_value, power_of_ten, sci

#: Title and caption of each cohort figure (:data:`mrdflow.cohort.COHORT_FIGURES`), by stem.
_FIGURE_TEXT = {
    "swimmer": (
        "Follow-up and response by patient",
        "One bar per patient over follow-up (months since the first CAR-T infusion), longest on top, coloured by "
        "best response. Markers show marrow MRD results after infusion (each at the time of its marrow), a second "
        "infusion and progression; an arrow marks a response that is still ongoing."),
    "kinetics": (
        "CAR-T expansion and persistence in blood",
        "CAR-T cells per µL (log scale) against days since each infusion, one line per patient and infusion "
        "(second infusion dashed), coloured by dose level; bars are 95% confidence intervals. Samples with no "
        "CAR-T cells are open triangles below the LLOQ (dotted line). Cmax, Tmax, AUC0–28 and persistence per "
        "patient are in the table above."),
    "over_time": (
        "Course by patient",
        "One panel per patient on a shared axis of days since the first infusion: CAR-T cells (blue; a second "
        "infusion's dashed) and host NK cells (squares with 95% Poisson confidence intervals) per µL of blood on "
        "a log scale, NKG2A+ % of NK cells on the right axis, and every marrow MRD call along the top (open circle "
        "negative, filled positive, grey square not evaluable). Dashed purple line: second infusion; red line: "
        "progression; shaded: after the end of follow-up. An NK tube without counting beads gives no NK count "
        "and is a tick on the day axis (NKG2A+ % only); the note under the panels says when there is no count "
        "at all."),
    "nkg2a_auc": (
        "Baseline NKG2A on NK cells versus CAR-T exposure",
        "Baseline NKG2A+ % of NK cells (blood) against CAR-T AUC0–28 after the first infusion, one labelled point "
        "per patient coloured by best response, with the Spearman correlation, its confidence interval, p and n. "
        "Exploratory: with so few patients one point can drive the correlation."),
    "mrd": (
        "Week-4 bone-marrow MRD",
        "Week-4 marrow MRD per patient (log scale): a filled circle is a positive call at its MRD level, a "
        "downward triangle a negative call at the sensitivity reached, a grey cross a sample that is not "
        "evaluable (reason in short). The dashed line is the 10^-5 threshold (IMWG); colour is best response."),
}
#: Cohort figures in the report's order: (file stem, title, caption).
FIGURES = tuple((stem, *_FIGURE_TEXT[stem]) for stem in COHORT_FIGURES)

# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

def _overall(resp: pd.DataFrame | None) -> dict:
    if resp is None or resp.empty:
        return {}
    if "group_by" in resp.columns:
        hit = resp[resp["group_by"] == "overall"]
        if not hit.empty:
            return hit.iloc[0].to_dict()
    return resp.iloc[0].to_dict()


def _table1_value(t1: pd.DataFrame | None, needle: str) -> Any:
    if t1 is None or "characteristic" not in t1.columns:
        return None
    hit = t1[t1["characteristic"].astype(str).str.lower().str.contains(needle, regex=False)]
    return hit.iloc[0]["value"] if not hit.empty and "value" in hit.columns else None


def _nkg2a_auc(assoc: pd.DataFrame | None) -> dict | None:
    if assoc is None or not {"x", "y", "test"} <= set(assoc.columns):
        return None
    hit = assoc[(assoc["x"] == "baseline_nkg2a_pct") & (assoc["y"] == "cart_auc_0_28")]
    return hit.iloc[0].to_dict() if not hit.empty else None


def _sec_summary(inp: ReportData) -> str:
    o = _overall(inp["response"])
    t1 = inp["table1"]
    rows: list[tuple[str, Any]] = []
    rows.append(("Patients", o.get("n") if o else (len(inp["patients"]) if inp["patients"] is not None else None)))
    rows.append(("Overall response rate (≥ PR)", o.get("orr")))
    rows.append(("Complete response rate (CR + sCR)", o.get("cr_rate")))
    if o.get("vgpr_or_better_n") is not None and not is_missing(o.get("vgpr_or_better_n")):
        pct = finite_float(o.get("vgpr_or_better_pct"))
        rows.append(("VGPR or better", f"{_text(o['vgpr_or_better_n'])}/{_text(o.get('n'))}"
                     + (f" ({pct:.1f}%)" if pct is not None else "")))
    mrd = o.get("mrd_negative")
    if not is_missing(mrd) and not is_missing(o.get("mrd_evaluable_n")):
        mrd = f"{_text(mrd)} of {_text(o['mrd_evaluable_n'])} evaluable"
    rows.append(("Week-4 marrow MRD-negative (among evaluable)", mrd))
    rows.append(("Baseline marrow plasma cells, % of nucleated, median (range)", _table1_value(t1, "plasma cells")))
    rows.append(("Baseline NKG2A+ % of NK cells, median (range)", _table1_value(t1, "nkg2a")))
    a = _nkg2a_auc(inp["associations"])
    if a is not None:
        stat = finite_float(a.get("statistic"))
        rows.append(("Baseline NKG2A % vs CAR-T AUC0–28 (exploratory)",
                     f"{'statistic' if is_missing(a.get('statistic_name')) else _text(a.get('statistic_name'))} = "
                     + (f"{stat:.2f}" if stat is not None else NA)
                     + f", p = {p_value(a.get('p_value'))} (n = {_text(a.get('n'))})"))
    sm = inp["sample_metrics"]
    if sm is not None and "status" in sm.columns:
        counts = sm["status"].fillna(NA).astype(str).value_counts()
        detail = ", ".join(f"{k} {int(counts[k])}" for k in sorted(counts.index))
        rows.append(("Samples analysed", f"{len(sm)} ({detail})"))
    inv = inp["inventory"]
    if inv is not None and "status" in inv.columns:
        bad = int((inv["status"].fillna(NA).astype(str) != "ok").sum())
        rows.append(("Input FCS files", f"{len(inv)} ({bad} missing, unreadable or not matching the panel)"))
    body = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{_h(v)}</td></tr>" for k, v in rows)
    out = [f'<table class="kv"><tbody>\n{body}\n</tbody></table>',
           '<p class="note">All numbers are taken from the cohort tables (results/cohort/*.tsv). Response '
           "rates are of all patients; the MRD-negative rate is of patients with an evaluable week-4 "
           "marrow. The cohort is small: read every rate with its denominator.</p>"]
    if inp.missing:
        out.append(_missing("Input tables not found: " + ", ".join(sorted(inp.missing))))
    return "\n".join(out)


def _sec_table1(inp: ReportData) -> str:
    t1 = inp["table1"]
    if t1 is None:
        return _not_available(inp.label("table1"))
    return table1_html(t1) + ('\n<p class="note">Median (range) for continuous variables, n (%) of all patients '
                              "for categories; rows marked (flow) are measured from the FCS files.</p>")


_RESPONSE_COLS = (
    ("group_by", "Grouped by", None), ("group", "Group", None), ("n", "n", None), ("orr", "ORR (≥ PR)", None),
    ("cr_rate", "CR rate", None), ("vgpr_or_better_n", "≥ VGPR, n", None),
    ("mrd_negative", "MRD-negative / evaluable", None), ("mrd_evaluable_n", "MRD evaluable, n", None),
    ("mrd_not_evaluable_n", "MRD not evaluable, n", None),
)


def _sec_response(inp: ReportData) -> str:
    out = []
    resp = inp["response"]
    if resp is None:
        out.append(_not_available(inp.label("response")))
    else:
        cols = [c for c in _RESPONSE_COLS if c[0] in resp.columns]
        cols += [(f"n_{r}", r, None) for r in RESPONSES if f"n_{r}" in resp.columns]
        rows = [[r.get(c) for c, _, _ in cols] for r in resp.to_dict("records")]
        out.append("<h3>Response summary</h3>")
        out.append(_table([h for _, h, _ in cols], rows, num=[i for i, (c, _, _) in enumerate(cols)
                                                              if c == "n" or c.endswith("_n") or c.startswith("n_")]))
        out.append('<p class="note">ORR: best response PR or better. CR rate: CR or sCR. MRD: week-4 marrow; '
                   "not-evaluable and missing calls are left out of the denominator.</p>")
    p = inp["patients"]
    if p is None:
        out.append(_not_available(inp.label("patients")))
        return "\n".join(out)
    p = _sorted(p, ["patient_id"])
    spec = [("patient_id", "Patient", None), ("age", "Age", integer), ("sex", "Sex", None),
            ("ig_type", "Ig type", None), ("light_chain", "Light chain", None), ("riss", "R-ISS", None),
            ("lymphodepletion", "Lymphodepletion", None),
            ("dose_level", "CAR-T dose (cells)", None), ("best_response", "Best response", None),
            ("follow_up_months", "Follow-up (months)", _fixed(1)),
            ("baseline_pc_pct", "Baseline PC % of nucleated", _fixed(2)),
            ("baseline_aberrant_pc_pct", "Baseline aberrant PC %", _fixed(2)),
            ("w4_mrd_status", "Week-4 MRD", None)]
    spec = [s for s in spec if s[0] in p.columns]
    rows = []
    for r in p.to_dict("records"):
        rows.append([_status(r.get(c), "mrd") if c == "w4_mrd_status" else _col(p, r, c, f) for c, _, f in spec])
    out.append("<h3>Per patient</h3>")
    out.append(_table([h for _, h, _ in spec], rows, num=[i for i, s in enumerate(spec) if s[2] is not None]))
    return "\n".join(out)


def _sensitivity(v: Any, required: float | None) -> Any:
    f = finite_float(v)
    if f is None:
        return None
    s = f"{f:.1e}"
    if required:
        reached = f <= required * (1 + 1e-9)
        s += f" ({power_of_ten(required)} {'reached' if reached else 'not reached'})"
    return s


def _sec_mrd(inp: ReportData, required: float | None) -> str:
    m = inp["mrd"]
    if m is None:
        return _not_available(inp.label("mrd"))
    m = _sorted(m, ["patient_id", "infusion", "day", "sample_id"])
    spec = [("patient_id", "Patient"), ("sample_id", "Sample"), ("visit", "Visit"), ("day", "Day"),
            ("mrd_status", "Status"), ("mrd_level", "MRD level (fraction)"), ("sensitivity", "Sensitivity"),
            ("n_nucleated", "Nucleated cells"), ("n_aberrant_pc", "Aberrant PCs"), ("hemodilution", "Hemodilution"),
            ("pc_pct", "PC % of nucleated"), ("reason", "Reason"), ("review", "Review (unsure gate)")]
    # the review column only when a call rests on an unsure gate (see the QC section's read-outs to review)
    spec = [s for s in spec if s[0] in m.columns and (s[0] != "review" or any(_truthy(v) for v in m["review"]))]
    fmts: dict[str, Callable[[Any], Any]] = {"mrd_level": sci, "sensitivity": lambda v: _sensitivity(v, required),
                                             "n_nucleated": integer, "n_aberrant_pc": integer, "pc_pct": _fixed(2)}
    rows = []
    for r in m.to_dict("records"):
        row = [_status(r.get(c), "mrd") if c == "mrd_status" else _col(m, r, c, fmts.get(c)) for c, _ in spec]
        if "mrd_level" in m.columns and is_missing(r.get("mrd_level")) and r.get("mrd_status") == "negative":
            row[[c for c, _ in spec].index("mrd_level")] = Raw('<span class="na">&lt; LOD</span>')
        rows.append(row)
    req = f" (required: {power_of_ten(required)}, i.e. enough nucleated cells to see the LOD count of " \
          "aberrant events at that level)" if required else ""
    numeric = ("day", "mrd_level", "n_nucleated", "n_aberrant_pc", "pc_pct")
    return (_table([h for _, h in spec], rows, num=[i for i, (c, _) in enumerate(spec) if c in numeric])
            + f'\n<p class="note">MRD level: aberrant plasma cells / nucleated cells (both NGF tubes pooled). '
              f"Sensitivity: the lowest level the sample could detect{html.escape(req)}. A sample that does not "
              "reach it, or is hemodiluted, is not evaluable; the reason column says why.</p>")


def _sec_nk(inp: ReportData) -> str:
    p = inp["patients"]
    if p is None:
        return _not_available(inp.label("patients"))
    p = _sorted(p, ["patient_id"])
    spec = [("patient_id", "Patient", None), ("baseline_nk_pct_lymph", "NK % of lymphocytes", _fixed(2)),
            ("baseline_nk_bright_pct", "CD56bright % of NK", _fixed(2)),
            ("baseline_nkg2a_pct", "NKG2A+ % of NK", _fixed(2)),
            ("baseline_nkg2a_pct_bright", "NKG2A+ % of CD56bright", _fixed(2)),
            ("baseline_nkg2a_pct_dim", "NKG2A+ % of CD56dim", _fixed(2)),
            ("baseline_nkg2a_median", "NKG2A median (channel units)", _fixed(1)),
            ("baseline_nkg2a_threshold_source", "NKG2A threshold from", None)]
    spec = [s for s in spec if s[0] in p.columns]
    rows = [[_col(p, r, c, f) for c, _, f in spec] for r in p.to_dict("records")]
    return (_table([h for _, h, _ in spec], rows, num=[i for i, s in enumerate(spec) if s[2] is not None])
            + '\n<p class="note">Baseline peripheral blood (NK tube). The NKG2A+ threshold comes from the '
              "patient's FMO tube where there is one, otherwise from the stained tube's own distribution "
              "(threshold source).</p>")


def _infusions(p: pd.DataFrame) -> list[tuple[int, str]]:
    out = []
    for c in p.columns:
        m = re.fullmatch(r"cart_cmax(?:_i(\d+))?", c)
        if m:
            k = int(m.group(1) or 1)
            out.append((k, "" if k == 1 else f"_i{k}"))
    return sorted(out)


def _figure(inp: ReportData, stem: str, title: str, caption: str, number: int) -> str:
    """Figure ``stem`` embedded as a base64 PNG, from the report's ``figures`` input of that stem."""
    path = next((p for p in map(Path, inp.inputs.figures) if p.stem == stem), None)
    head = f"Figure {number}. {title}."
    if path is None or not path.is_file():
        label = inp.label_path(path) if path is not None else f"{stem}.png"
        return (f'<figure id="fig-{stem}">' + _missing(f"{head} Figure not available: {label} "
                                                        "was not found.") + "</figure>")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{stem}"><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(head)}</b> {html.escape(caption)}</figcaption></figure>")


def _sec_kinetics(inp: ReportData, fig_html: str) -> str:
    out = []
    p = inp["patients"]
    if p is None:
        out.append(_not_available(inp.label("patients")))
    else:
        p = _sorted(p, ["patient_id"])
        infs = _infusions(p)
        spec = [("cart_cmax", "Cmax (cells/µL)", _fixed(1)), ("cart_tmax_day", "Tmax (day)", integer),
                ("cart_auc_0_28", "AUC0–28 (cells/µL × day)", _fixed(0)),
                ("cart_persistence_day", "Persistence (last day ≥ LLOQ)", integer),
                ("cart_car_pct_cd3_peak", "CAR+ % of CD3 at peak", _fixed(1)),
                ("cart_n_samples", "Samples", integer)]
        rows = []
        for r in p.to_dict("records"):
            for k, sfx in infs:
                vals = [_col(p, r, c + sfx, f) for c, _, f in spec]
                if k > 1 and all(is_missing(v) for v in vals):
                    continue
                dose = r.get("dose_level") if k == 1 else dose_label(finite_float(r.get(f"infusion{k}_dose_cells")))
                rows.append([r.get("patient_id"), k, dose, *vals])
        headers = ["Patient", "Infusion", "Dose (cells)"] + [h for _, h, _ in spec]
        out.append(_table(headers, rows, num=list(range(3, len(headers))) + [1]))
        out.append('<p class="note">Per patient and infusion, from blood CAR-T counts (bead-based cells/µL). '
                   "AUC0–28 by the trapezoid rule over days 0–28; persistence is the last day at or above the "
                   "assay LLOQ. A second infusion has its own row, with its own dose.</p>")
    out.append(fig_html)
    kin = inp["kinetics"]
    if kin is None:
        out.append(_not_available(inp.label("kinetics")))
    else:
        kin = _sorted(kin, ["patient_id", "infusion", "day", "sample_id"])
        rows = []
        for r in kin.to_dict("records"):
            lo, hi = finite_float(r.get("cells_per_ul_ci95_low")), finite_float(r.get("cells_per_ul_ci95_high"))
            ci = f"{lo:.1f}–{hi:.1f}" if lo is not None and hi is not None else None
            rows.append([r.get("patient_id"), r.get("infusion"), r.get("day"), r.get("sample_id"),
                         _col(kin, r, "cells_per_ul", _fixed(1)), ci, _col(kin, r, "car_pct_cd3", _fixed(1))])
        out.append(f"<details><summary>Every CAR-T sample ({len(rows)} rows)</summary>"
                   + _table(["Patient", "Infusion", "Day", "Sample", "CAR-T cells/µL", "95% CI (Poisson)",
                             "CAR+ % of CD3"], rows, num=[1, 2, 4, 6]) + "</details>")
    return "\n".join(out)


def _sec_associations(inp: ReportData) -> str:
    a = inp["associations"]
    head = ('<p class="note"><b>Exploratory.</b> The cohort is tiny, so these associations describe the data '
            "and test nothing: they were not powered, are not corrected for multiple comparisons, and every "
            "p-value is shown with the n it rests on. Effects come with their confidence interval.</p>")
    if a is None:
        return head + _not_available(inp.label("associations"))
    rows = []
    for r in a.to_dict("records"):
        label = f"{_text(r.get('x'))} vs {_text(r.get('y'))}"
        note = [_text(r.get(c)) for c in ("note", "label") if c in a.columns and _truthy(r.get(c))
                and _text(r.get(c)).lower() != "exploratory"]  # stats tags every row "exploratory"
        n = _text(r.get("n"))
        stat = finite_float(r.get("statistic"))
        stat_name = "statistic" if is_missing(r.get("statistic_name")) else _text(r.get("statistic_name"))
        stat_s = None if stat is None else f"{stat_name} = {stat:.3g}"
        method = r.get("p_method")
        p_s = f"p = {p_value(r.get('p_value'))} (n = {n}" + (f"; {_text(method)})" if not is_missing(method) else ")")
        eff = finite_float(r.get("effect"))
        lo, hi = finite_float(r.get("ci_low")), finite_float(r.get("ci_high"))
        eff_s = None
        if eff is not None:
            name = r.get("effect_name")
            eff_s = (f"{_text(name)} = " if not is_missing(name) else "") + f"{eff:.3g}"
            if lo is not None and hi is not None:
                eff_s += f" [95% CI {lo:.3g}, {hi:.3g}]"
            if not is_missing(r.get("ci_method")):
                eff_s += f" ({_text(r.get('ci_method'))})"
        groups = r.get("n_groups") if "n_groups" in a.columns else None
        rows.append([label, r.get("test"), n, stat_s, p_s, eff_s, groups, "; ".join(note) or None])
    return head + _table(["Association", "Test", "n", "Statistic", "p (n; method)", "Effect (95% CI)",
                          "Groups", "Note"], rows, num=[2])


#: Figures shown in a section of their own (stem -> that section's heading), not again under "Figures".
SHOWN_IN = {"kinetics": "CAR-T kinetics", "over_time": "Over time"}


def _sec_figures(figs: Mapping[str, str]) -> str:
    out = []
    for stem, title, _ in FIGURES:
        if stem in SHOWN_IN:
            out.append(f'<p class="note">Figure {_fig_number(stem)} ({html.escape(title)}) is shown in the '
                       f'<a href="#fig-{stem}">{html.escape(SHOWN_IN[stem])}</a> section.</p>')
        else:
            out.append(figs[stem])
    return "\n".join(out)


def _fig_number(stem: str) -> int:
    return [f[0] for f in FIGURES].index(stem) + 1
