"""Cohort stage: per-sample metrics joined with the clinical sheet into cohort tables.

Visits are matched through the sample sheet's ``visit``/``day``/``infusion`` (copied into every
``metrics.json``), never through file names: the baseline marrow gives PC burden, the baseline PB
NK tube gives NKG2A%, the week-4 marrow gives the MRD call, and the serial PB CAR-T tubes give the
kinetics per infusion (:mod:`mrdflow.cohort`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mrdflow.atomic import atomic_open
from mrdflow.cohort._outputs import CohortTableFiles
from mrdflow.formatting import NA, count_percent, dose_label, is_missing, number, rate, tsv_cell
from mrdflow.metrics import flatten_metrics, read_metrics

__all__ = ["CohortTables", "add_derived", "build_patients", "load_metrics", "read_tsv", "response_summary",
           "sample_metrics_rows", "table1", "write_cohort", "write_table", "write_tsv"]

#: Columns that lead the sample table, in this order; the rest follow alphabetically.
LEADING = ["sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status", "errors", "review_needed",
           "pc_pc_pct", "pc_aberrant_pc_pct", "mrd_mrd_status", "mrd_mrd_level", "mrd_sensitivity",
           "mrd_n_nucleated", "mrd_n_aberrant_pc", "mrd_hemodilution", "nk_nkg2a_pct", "cart_cells_per_ul"]


def sample_metrics_rows(files: Iterable[str | Path]) -> list[dict]:
    """One flat row per ``metrics.json`` (nested keys joined with '_'), each checked against the
    metrics schema on the way in."""
    return [flatten_metrics(m) for m in load_metrics(files)]


def write_table(rows: Sequence[dict], path: str | Path, leading: Sequence[str] = LEADING) -> None:
    """Write rows as TSV (union of keys; leading columns first), atomically."""
    keys: list[str] = [k for k in leading if any(k in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(keys))
    cols = keys + rest
    with atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([tsv_cell(r.get(c)) for c in cols])


RESPONSES = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD")


def load_metrics(files: Iterable[str | Path]) -> list[dict]:
    """Every ``metrics.json`` as a dict, each checked against ``metrics.schema.yaml``
    (:func:`mrdflow.metrics.read_metrics`)."""
    return [read_metrics(f).as_dict() for f in files]


@dataclass
class CohortTables:
    """patients: one row per patient (clinical + flow read-outs). kinetics: one row per CAR-T
    sample (patient, infusion, day, cells/µL). mrd: one row per marrow sample (the MRD timeline).
    nk: one row per stained NK tube (the NK timeline: NK cells/µL, subsets, NKG2A+ %)."""

    patients: pd.DataFrame
    kinetics: pd.DataFrame
    mrd: pd.DataFrame
    nk: pd.DataFrame = field(default_factory=pd.DataFrame)


#: Columns of the NK timeline (nk_timeline.tsv), one row per stained NK tube.
NK_COLUMNS = ("patient_id", "sample_id", "visit", "day", "day_since_infusion1", "infusion", "nk_cells_per_ul",
              "nk_cells_per_ul_ci95_low", "nk_cells_per_ul_ci95_high", "nk_count_reason", "nk_pct_lymph",
              "nk_bright_pct_of_nk", "nk_dim_pct_of_nk", "nk_bright_cells_per_ul", "nk_dim_cells_per_ul",
              "nkg2a_pct", "nkg2a_pct_bright", "nkg2a_pct_dim", "review")


def _nk_row(m: Mapping) -> dict:
    """One NK timeline row: the tube's counts per µL when it carried counting beads, else the
    reason there is no count; the subsets and NKG2A+ % either way."""
    nk = m["nk"]
    per_ul = _get(m, "nk", "cells_per_ul")
    bright, dim = nk.get("nk_bright_pct_of_nk"), nk.get("nk_dim_pct_of_nk")
    return {
        "patient_id": m["patient_id"], "sample_id": m["sample_id"], "visit": m["visit"], "day": m["day"],
        "day_since_infusion1": m["day_since_infusion1"], "infusion": m["infusion"],
        "nk_cells_per_ul": per_ul, "nk_cells_per_ul_ci95_low": nk.get("cells_per_ul_ci95_low"),
        "nk_cells_per_ul_ci95_high": nk.get("cells_per_ul_ci95_high"),
        "nk_count_reason": nk.get("count_reason") or ("" if per_ul is not None else
                                                      "no counting beads in the NK tube: NKG2A % only"),
        "nk_pct_lymph": nk.get("nk_pct_lymph"), "nk_bright_pct_of_nk": bright, "nk_dim_pct_of_nk": dim,
        "nk_bright_cells_per_ul": None if per_ul is None or bright is None else per_ul * bright / 100.0,
        "nk_dim_cells_per_ul": None if per_ul is None or dim is None else per_ul * dim / 100.0,
        "nkg2a_pct": nk.get("nkg2a_pct"), "nkg2a_pct_bright": nk.get("nkg2a_pct_bright"),
        "nkg2a_pct_dim": nk.get("nkg2a_pct_dim"), "review": _review(m, NK_REVIEW),
    }


def _one(v) -> float | None:
    """A finite number, or None."""
    vals = _num([v])
    return vals[0] if vals else None


def _over_time(pid: str, row: Mapping, mrd: pd.DataFrame, nk: pd.DataFrame, nk_recovery: Mapping) -> dict:
    """The patient's MRD course and NK course columns (:mod:`mrdflow.cohort._timeline`)."""
    from mrdflow.cohort._timeline import MRDAssessment, NKPoint, mrd_course, nk_course

    months = _one(row.get("follow_up_months"))
    sub = mrd[(mrd.patient_id == pid) & mrd.day_since_infusion1.notna()]
    course = mrd_course([MRDAssessment(int(r.day_since_infusion1), str(r.mrd_status), _one(r.mrd_level),
                                       _one(r.sensitivity)) for r in sub.itertuples()],
                        follow_up_days=months * 30.4375 if months is not None else None)
    nsub = nk[(nk.patient_id == pid) & nk.day_since_infusion1.notna()] if not nk.empty else nk
    points = [NKPoint(int(r.day_since_infusion1), _one(r.nk_cells_per_ul), _one(r.nkg2a_pct))
              for r in nsub.itertuples()]
    nkc = nk_course(points, cart_peak_day=_one(row.get("cart_tmax_day")),
                    fraction_of_baseline=nk_recovery.get("fraction_of_baseline"),
                    cells_per_ul=nk_recovery.get("cells_per_ul"))
    return {
        "mrd_n_assessments": course.n_assessments, "mrd_sustained_negative": course.sustained_negative,
        "mrd_sustained_reason": course.sustained_reason, "mrd_negative_through_day": course.negative_through_day,
        "mrd_best_depth": course.best_depth, "mrd_best_depth_negative": course.best_depth_negative,
        "mrd_conversion_day": course.conversion_day, "mrd_last_day": course.last_day,
        "mrd_last_status": course.last_status,
        "nk_n_samples": nkc.n_points, "nk_baseline_cells_per_ul": nkc.baseline_cells_per_ul,
        "nk_recovery_day": nkc.recovery_day, "nk_recovery_level": nkc.recovery_level,
        "nk_recovery_reason": nkc.recovery_reason, "nk_at_cart_peak": nkc.at_cart_peak,
        "nkg2a_pct_last": nkc.nkg2a_pct_last, "nkg2a_pct_last_day": nkc.nkg2a_pct_last_day,
        "nkg2a_pct_change": nkc.nkg2a_pct_change, "nkg2a_pct_min": nkc.nkg2a_pct_min,
        "nkg2a_pct_max": nkc.nkg2a_pct_max,
    }


def _get(m: Mapping, *keys, default=None):
    cur: Any = m
    for k in keys:
        if not isinstance(cur, Mapping) or k not in cur:
            return default
        cur = cur[k]
    return cur


def _pick(metrics: Sequence[dict], patient: str, specimen: str, visit: str, key: str) -> dict | None:
    """The patient's sample of that specimen and visit that carries ``key`` (the latest day wins
    if several)."""
    hits = [m for m in metrics if m["patient_id"] == patient and m["specimen"] == specimen
            and m["visit"] == visit and key in m]
    return sorted(hits, key=lambda m: (m.get("infusion", 1), m.get("day", 0)))[-1] if hits else None


def _infusion_offsets(clinical_row: Mapping) -> dict[int, int]:
    """Days from infusion 1 to each infusion (the sample sheet counts a sample's ``day`` from its
    own infusion; the swimmer plot and the MRD timeline need one clock)."""
    from datetime import date

    out = {1: 0}
    d1, d2 = clinical_row.get("infusion1_date"), clinical_row.get("infusion2_date")
    if d1 and d2:
        out[2] = (date.fromisoformat(str(d2)) - date.fromisoformat(str(d1))).days
    return out


def build_patients(clinical: Sequence[Mapping], metrics: Sequence[dict], *, cart_lloq: float = 1.0,
                   auc_window_days: float = 28.0, nk_recovery: Mapping | None = None) -> CohortTables:
    """Join the clinical sheet with every sample's read-outs (see the module docstring).

    ``cart_lloq``: CAR-T assay LLOQ in cells/µL (persistence = last day at or above it).
    ``nk_recovery``: ``fraction_of_baseline`` and/or ``cells_per_ul`` (config
    ``cohort.nk_recovery``) for ``nk_recovery_day``.
    """
    from mrdflow.cohort._kinetics import kinetics as pk

    kin_rows, mrd_rows, nk_rows, rows = [], [], [], []
    offsets = {c["patient_id"]: _infusion_offsets(c) for c in clinical}
    for m in metrics:
        off = offsets.get(m["patient_id"], {}).get(m.get("infusion", 1))
        m = {**m, "day_since_infusion1": None if off is None or m.get("day") is None else m["day"] + off}
        if "cart" in m:
            c = m["cart"]
            kin_rows.append({
                "patient_id": m["patient_id"], "infusion": m["infusion"], "day": m["day"],
                "day_since_infusion1": m["day_since_infusion1"], "sample_id": m["sample_id"],
                "cells_per_ul": c.get("cells_per_ul"), "car_pct_cd3": c.get("car_pct_cd3"),
                "cells_per_ul_ci95_low": c.get("cells_per_ul_ci95_low"),
                "cells_per_ul_ci95_high": c.get("cells_per_ul_ci95_high"),
                "review": _review(m, CART_REVIEW),
            })
        if "nk" in m:
            nk_rows.append(_nk_row(m))
        if "mrd" in m:
            mrd_rows.append({
                "patient_id": m["patient_id"], "sample_id": m["sample_id"], "visit": m["visit"], "day": m["day"],
                "day_since_infusion1": m["day_since_infusion1"],
                "infusion": m["infusion"], "mrd_status": _get(m, "mrd", "mrd_status"),
                "mrd_level": _get(m, "mrd", "mrd_level"), "sensitivity": _get(m, "mrd", "sensitivity"),
                "n_nucleated": _get(m, "mrd", "n_nucleated"), "n_aberrant_pc": _get(m, "mrd", "n_aberrant_pc"),
                "hemodilution": _get(m, "mrd", "hemodilution"), "reason": _get(m, "mrd", "mrd_reason"),
                "pc_pct": _get(m, "pc", "pc_pct"), "review": _review(m, MRD_REVIEW),
            })
    kin = pd.DataFrame(kin_rows, columns=["patient_id", "infusion", "day", "day_since_infusion1", "sample_id",
                                          "cells_per_ul", "car_pct_cd3", "cells_per_ul_ci95_low",
                                          "cells_per_ul_ci95_high", "review"])
    kin = kin.sort_values(["patient_id", "infusion", "day"], kind="stable").reset_index(drop=True)
    mrd = pd.DataFrame(mrd_rows, columns=["patient_id", "sample_id", "visit", "day", "day_since_infusion1", "infusion",
                                          "mrd_status", "mrd_level", "sensitivity", "n_nucleated", "n_aberrant_pc",
                                          "hemodilution", "reason", "pc_pct", "review"])
    mrd = mrd.sort_values(["patient_id", "day_since_infusion1"], kind="stable").reset_index(drop=True)
    nk = pd.DataFrame(nk_rows, columns=list(NK_COLUMNS))
    nk = nk.sort_values(["patient_id", "day_since_infusion1"], kind="stable").reset_index(drop=True)
    for c in clinical:
        pid = c["patient_id"]
        row: dict[str, Any] = dict(c)
        row["dose_level"] = dose_label(c.get("cart_dose_cells"))
        bm0 = _pick(metrics, pid, "BM", "baseline", "pc")
        row["baseline_pc_pct"] = _get(bm0, "pc", "pc_pct") if bm0 else None
        row["baseline_aberrant_pc_pct"] = _get(bm0, "pc", "aberrant_pc_pct") if bm0 else None
        nk0 = _pick(metrics, pid, "PB", "baseline", "nk")
        for key, src in (("baseline_nkg2a_pct", "nkg2a_pct"), ("baseline_nkg2a_pct_bright", "nkg2a_pct_bright"),
                         ("baseline_nkg2a_pct_dim", "nkg2a_pct_dim"), ("baseline_nk_pct_lymph", "nk_pct_lymph"),
                         ("baseline_nk_bright_pct", "nk_bright_pct_of_nk"), ("baseline_nkg2a_median", "nkg2a_median"),
                         ("baseline_nkg2a_threshold_source", "nkg2a_threshold_source")):
            row[key] = _get(nk0, "nk", src) if nk0 else None
        w4 = _pick(metrics, pid, "BM", "week4", "mrd")
        row["w4_mrd_status"] = _get(w4, "mrd", "mrd_status") if w4 else None
        row["w4_mrd_level"] = _get(w4, "mrd", "mrd_level") if w4 else None
        row["w4_sensitivity"] = _get(w4, "mrd", "sensitivity") if w4 else None
        row["w4_mrd_reason"] = _get(w4, "mrd", "mrd_reason") if w4 else "no week-4 marrow analysed"
        for inf in sorted(set(kin.loc[kin.patient_id == pid, "infusion"])) or [1]:
            sub = kin[(kin.patient_id == pid) & (kin.infusion == inf)]
            k = pk(sub["day"].tolist(), sub["cells_per_ul"].tolist(), lloq=cart_lloq, window=auc_window_days)
            sfx = "" if inf == 1 else f"_i{inf}"
            has_peak = k.n_points and sub["cells_per_ul"].notna().any()
            peak = sub.loc[sub["cells_per_ul"].astype(float).idxmax()] if has_peak else None
            row[f"cart_cmax{sfx}"] = k.cmax
            row[f"cart_tmax_day{sfx}"] = k.tmax_day
            row[f"cart_auc_0_28{sfx}"] = k.auc_0_28
            row[f"cart_auc_complete{sfx}"] = k.auc_complete
            row[f"cart_persistence_day{sfx}"] = k.persistence_day
            row[f"cart_fall_rate_per_day{sfx}"] = k.fall_rate_per_day
            row[f"cart_car_pct_cd3_peak{sfx}"] = None if peak is None else peak["car_pct_cd3"]
            row[f"cart_n_samples{sfx}"] = k.n_points
        row.update(_over_time(pid, row, mrd, nk, nk_recovery or {"fraction_of_baseline": 0.5}))
        row["missing_readouts"] = _missing_readouts(metrics, pid, row)
        row["review_needed"] = _review_needed(metrics, pid, {"baseline PC %": bm0, "baseline NKG2A %": nk0,
                                                             "week-4 MRD": w4})
        rows.append(row)
    patients = add_derived(pd.DataFrame(rows))
    return CohortTables(patients, kin, mrd, nk)


#: Read-outs each patient is expected to have: (column, specimen, visit, what it is).
EXPECTED = (("baseline_pc_pct", "BM", "baseline", "baseline PC %"),
            ("baseline_nkg2a_pct", "PB", "baseline", "baseline NKG2A %"),
            ("w4_mrd_status", "BM", "week4", "week-4 MRD"),
            ("cart_cmax", "PB", "serial", "CAR-T kinetics"))


def _missing_readouts(metrics: Sequence[dict], patient: str, row: Mapping) -> str:
    """Which expected read-outs the patient lacks and why ('' when none), e.g.
    'week-4 MRD: PT02_BM_week4 failed (ngf1: DATA segment truncated)'."""
    out = []
    for col, specimen, visit, what in EXPECTED:
        v = row.get(col)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            continue
        cands = [m for m in metrics if m["patient_id"] == patient and m["specimen"] == specimen and m["visit"] == visit]
        if not cands:
            out.append(f"{what}: no sample")
            continue
        why = []
        for m in cands:
            errs = "; ".join(f"{e.get('tube')}: {e.get('error')}" for e in m.get("errors", []))
            why.append(f"{m['sample_id']} {m.get('status', '?')}" + (f" ({errs})" if errs else ""))
        out.append(f"{what}: " + ", ".join(why))
    return " | ".join(out)


#: The sample's ``review_needed`` read-outs (names as mrdflow.sample writes them) behind each cohort
#: read-out: baseline PC % (and aberrant PC %), baseline NKG2A %, the week-4 MRD call, CAR-T counts.
PC_REVIEW = ("PC %", "aberrant PCs")
NK_REVIEW = ("NKG2A %",)
MRD_REVIEW = ("MRD call",)
CART_REVIEW = ("CAR-T cells/µL",)
_PATIENT_REVIEW = {"baseline PC %": PC_REVIEW, "baseline NKG2A %": NK_REVIEW, "week-4 MRD": MRD_REVIEW}


def _review(m: Mapping, readouts: Sequence[str]) -> str:
    """Why the sample's read-outs named in ``readouts`` need review, e.g. 'MRD call: ngf1 PC (CD38.min
    on its window edge)'; '' when none does."""
    return "; ".join(f"{r['readout']}: {r['tube']} {r['gate']} ({r['reason']})"
                     for r in m.get("review_needed", ()) if r["readout"] in readouts)


def _review_needed(metrics: Sequence[dict], patient: str, picked: Mapping[str, dict | None]) -> str:
    """The patient's read-outs (as ``missing_readouts`` names them) that rest on unsure gates, with
    the sample and why ('' when none), e.g. 'baseline PC %: PT01_BM_baseline PC %: ngf1 PC (...)'.
    CAR-T kinetics: every CAR-T sample of the patient whose count needs review."""
    out = [f"{what}: {m['sample_id']} {why}" for what, m in picked.items() if m is not None
           for why in [_review(m, _PATIENT_REVIEW[what])] if why]
    out += [f"CAR-T kinetics: {m['sample_id']} {why}" for m in metrics
            if m["patient_id"] == patient and "cart" in m for why in [_review(m, CART_REVIEW)] if why]
    return " | ".join(out)


ORR_RESPONSES = ("sCR", "CR", "VGPR", "PR")


def add_derived(patients: pd.DataFrame) -> pd.DataFrame:
    """Boolean helper columns used by the summaries and associations: ``responder`` (≥ PR),
    ``cr_or_better`` (CR/sCR), ``vgpr_or_better``, and ``w4_mrd_negative`` (True/False, missing
    when the week-4 call is not evaluable or absent)."""
    p = patients.copy()
    resp = p["best_response"] if "best_response" in p else pd.Series([None] * len(p), index=p.index)
    p["responder"] = resp.isin(ORR_RESPONSES)
    p["cr_or_better"] = resp.isin(("sCR", "CR"))
    p["vgpr_or_better"] = resp.isin(("sCR", "CR", "VGPR"))
    status = p["w4_mrd_status"] if "w4_mrd_status" in p else pd.Series([None] * len(p), index=p.index)
    p["w4_mrd_negative"] = pd.Series([True if s == "negative" else False if s == "positive" else None for s in status],
                                     index=p.index, dtype="object")
    return p


# ---------------------------------------------------------------------------------------------
# Table 1 and response summary (brief section 5)
# ---------------------------------------------------------------------------------------------

def _num(values) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _continuous(label: str, values, *, source: str, median_dp: int | None = None, range_dp: int | None = None,
                n_total: int) -> dict:
    v = _num(values)
    row = {"characteristic": label, "category": "", "source": source, "n": len(v), "n_missing": n_total - len(v),
           "count": None, "percent": None, "median": None, "min": None, "max": None}
    if v:
        med, lo, hi = float(pd.Series(v).median()), min(v), max(v)
        row.update(median=med, min=lo, max=hi,
                   value=f"{number(med, median_dp)} ({number(lo, range_dp)}, {number(hi, range_dp)})")
    else:
        row["value"] = "not available"
    return row


def _categorical(label: str, values, categories: Sequence[tuple[str, Any]], *, source: str, n_total: int) -> list[dict]:
    vals = list(values)
    known = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    rows = []
    for name, match in categories:
        k = sum(1 for v in known if (match(v) if callable(match) else v == match))
        pct = 100.0 * k / n_total if n_total else None
        rows.append({"characteristic": label, "category": name, "source": source, "n": len(known),
                     "n_missing": n_total - len(known), "count": k, "percent": pct, "median": None,
                     "min": None, "max": None, "value": count_percent(k, pct)})
    return rows


def _ig_category(row: Mapping) -> str | None:
    ig = row.get("ig_type")
    if ig == "Light chain":
        lc = {"kappa": "κ", "κ": "κ", "lambda": "λ", "λ": "λ"}.get(row.get("light_chain") or "", "")
        return f"{lc} Light Chain".strip()
    return ig


def table1(patients: pd.DataFrame) -> pd.DataFrame:
    """Baseline characteristics as the poster's Table 1: median (range) for continuous variables,
    n (%) for categorical ones (percent of all patients; missing values counted in ``n_missing``).
    PC % (of nucleated cells, baseline marrow) and NKG2A+ % of NK cells (baseline blood) come from
    the FCS measurements (``source`` = ``flow``); the rest from the clinical sheet."""
    n = len(patients)
    recs = patients.to_dict("records")
    col = lambda c: [r.get(c) for r in recs]  # noqa: E731
    rows: list[dict] = [{"characteristic": "Patients", "category": "", "source": "clinical", "n": n, "n_missing": 0,
                         "count": n, "percent": None, "median": None, "min": None, "max": None, "value": f"N={n}"}]
    rows.append(_continuous("Age, median (range), y", col("age"), source="clinical", n_total=n))
    rows += _categorical("Sex, n (%)", col("sex"), [("Male", "M"), ("Female", "F")], source="clinical", n_total=n)
    igs = [_ig_category(r) for r in recs]
    order = ["IgG", "IgA", "IgM", "IgD", "IgE", "κ Light Chain", "λ Light Chain", "Light Chain", "Non-secretory"]
    present = [c for c in order if c in igs] + sorted({c for c in igs if c and c not in order})
    rows += _categorical("Type of immunoglobulin at diagnosis, n (%)", igs, [(c, c) for c in present],
                         source="clinical", n_total=n)
    rows += _categorical("R-ISS stage at screening, n (%)", col("riss"), [(s, s) for s in ("I", "II", "III")],
                         source="clinical", n_total=n)
    rows += _categorical("Cytogenetic high risk, n (%)", col("cyto_high_risk"), [("yes", "yes")], source="clinical",
                         n_total=n)
    rows.append(_continuous("Prior lines of therapy, median (range)", col("prior_lines"), source="clinical", n_total=n))
    rows += _categorical("ASCT, n (%)", col("prior_asct"), [("yes", "yes")], source="clinical", n_total=n)
    rows += _categorical("Extramedullary plasmacytoma, n (%)", col("extramedullary"), [("yes", "yes")],
                         source="clinical", n_total=n)
    rows.append(_continuous("Proportion of plasma cells, median (range), %", col("baseline_pc_pct"), source="flow",
                            median_dp=2, range_dp=1, n_total=n))
    rows.append(_continuous("NKG2A % in NK cells at baseline, median (range), %", col("baseline_nkg2a_pct"),
                            source="flow", median_dp=2, range_dp=1, n_total=n))
    rows += _categorical("Lymphodepletion dose, n (%)", col("lymphodepletion"),
                         [("Full dose", "full"), ("Reduced dose", "reduced")], source="clinical", n_total=n)
    doses = sorted(set(_num(col("cart_dose_cells"))))
    rows += _categorical("CAR-T dose (cells), first infusion, n (%)", _num(col("cart_dose_cells")),
                         [(dose_label(d), d) for d in doses], source="clinical", n_total=n)
    cols = ["characteristic", "category", "value", "n", "n_missing", "count", "percent", "median", "min", "max",
            "source"]
    return pd.DataFrame(rows, columns=cols)


def response_summary(patients: pd.DataFrame) -> pd.DataFrame:
    """ORR (≥ PR), CR rate (CR + sCR), VGPR-or-better and the week-4 MRD-negative rate among
    evaluable patients (negative or positive; not-evaluable and missing calls are left out of the
    denominator and counted in ``mrd_not_evaluable``): overall, by first-infusion dose level and by
    lymphodepletion. Percentages are of the patients in the group."""
    p = add_derived(patients) if "responder" not in patients else patients
    groups: list[tuple[str, str, pd.DataFrame]] = [("overall", "all", p)]
    if "cart_dose_cells" in p:
        for d in sorted(set(_num(p["cart_dose_cells"]))):
            groups.append(("dose_level", dose_label(d), p[p["cart_dose_cells"].astype(float) == d]))
    if "lymphodepletion" in p:
        for lv in ("full", "reduced"):
            sub = p[p["lymphodepletion"] == lv]
            if len(sub):
                groups.append(("lymphodepletion", lv, sub))
    rows = []
    for by, name, g in groups:
        n = len(g)
        mrd_eval = g["w4_mrd_negative"].map(lambda v: v is True or v is False)
        mrd_neg = int((g["w4_mrd_negative"] == True).sum())  # noqa: E712 (object column)
        k_orr, k_cr, k_vgpr = int(g["responder"].sum()), int(g["cr_or_better"].sum()), int(g["vgpr_or_better"].sum())
        row = {"group_by": by, "group": name, "n": n,
               "orr_n": k_orr, "orr_pct": 100.0 * k_orr / n if n else None, "orr": rate(k_orr, n),
               "cr_n": k_cr, "cr_pct": 100.0 * k_cr / n if n else None, "cr_rate": rate(k_cr, n),
               "vgpr_or_better_n": k_vgpr, "vgpr_or_better_pct": 100.0 * k_vgpr / n if n else None,
               "mrd_evaluable_n": int(mrd_eval.sum()), "mrd_negative_n": mrd_neg,
               "mrd_not_evaluable_n": int(n - mrd_eval.sum()),
               "mrd_negative_pct_of_evaluable": 100.0 * mrd_neg / int(mrd_eval.sum()) if mrd_eval.sum() else None,
               "mrd_negative": rate(mrd_neg, int(mrd_eval.sum()))}
        for r in RESPONSES:
            row[f"n_{r}"] = int((g["best_response"] == r).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """A Parquet copy of a table (pyarrow), written atomically."""
    from mrdflow.atomic import atomic_path

    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """A DataFrame as TSV (``NA`` for missing, 6 significant digits), written atomically."""
    with atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(list(df.columns))
        for rec in df.itertuples(index=False, name=None):
            w.writerow([tsv_cell(None if is_missing(v) else v) for v in rec])


def table1_html(t1: pd.DataFrame, *, title: str = "Table 1. Patient characteristics") -> str:
    """Table 1 laid out as in the poster: a heading row per characteristic, its categories indented."""
    import html as _html

    is_n = t1["characteristic"] == "Patients"
    n = int(t1.loc[is_n, "count"].iloc[0]) if is_n.any() else ""
    lines = [f'<table class="tbl table1"><caption>{_html.escape(title)}</caption>',
             f"<thead><tr><th>Baseline characteristic</th><th>N={n}</th></tr></thead><tbody>"]
    last = None
    for r in t1.to_dict("records"):
        if r["characteristic"] == "Patients":
            continue
        flow = ' <span class="src">(flow)</span>' if r["source"] == "flow" else ""
        if r["category"]:
            if r["characteristic"] != last:
                lines.append(f'<tr class="head"><td colspan="2">{_html.escape(r["characteristic"])}</td></tr>')
            lines.append(f'<tr><td class="cat">{_html.escape(r["category"])}</td>'
                         f'<td>{_html.escape(str(r["value"]))}</td></tr>')
        else:
            lines.append(f'<tr><td>{_html.escape(r["characteristic"])}{flow}</td>'
                         f'<td>{_html.escape(str(r["value"]))}</td></tr>')
        last = r["characteristic"]
    lines.append("</tbody></table>")
    return "\n".join(lines)


def write_cohort(metrics_files: Sequence[str | Path], clinical: Sequence[Mapping], settings: Mapping,
                 out: CohortTableFiles) -> CohortTables:
    """Build and write every cohort table (the files of ``out``, rule ``cohort_tables``'s outputs) from
    the samples' ``metrics.json`` and the validated clinical rows. ``settings`` is the config's
    ``cohort`` section."""
    from mrdflow.cohort._stats import associations

    metrics = load_metrics(metrics_files)
    tables = build_patients(clinical, metrics, cart_lloq=settings["cart_lloq_cells_per_ul"],
                            auc_window_days=settings["auc_window_days"], nk_recovery=settings.get("nk_recovery"))
    write_tsv(tables.patients, out.patients)
    write_parquet(_parquet_safe(tables.patients), out.patients_parquet)
    write_tsv(tables.kinetics, out.kinetics)
    write_tsv(tables.mrd, out.mrd)
    write_tsv(tables.nk, out.nk)
    t1 = table1(tables.patients)
    write_tsv(t1, out.table1)
    with atomic_open(out.table1_html, "w", encoding="utf-8") as fh:
        fh.write('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Table 1</title></head><body>\n'
                 + table1_html(t1) + "\n</body></html>\n")
    write_tsv(response_summary(tables.patients), out.response)
    assoc = associations(tables.patients, list(settings["associations"]), n_perm=settings["n_perm"],
                         n_boot=settings["n_boot"], seed=settings["seed"])
    write_tsv(assoc, out.associations)
    flat = pd.DataFrame([flatten_metrics(m) for m in metrics])
    write_parquet(_parquet_safe(flat), out.samples_parquet)
    return tables


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns of mixed Python types (e.g. a flag that is sometimes a string) as text, so pyarrow
    can store them."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(v) for v in out[c] if not is_missing(v)}
            if len(kinds) > 1 or (kinds and kinds.pop() not in (str, bool)):
                out[c] = [None if is_missing(v) else str(v) for v in out[c]]
    return out


def read_tsv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv` (``NA`` = missing)."""
    return pd.read_csv(path, sep="\t", na_values=[NA], keep_default_na=False)
