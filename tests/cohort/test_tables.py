"""Cohort tables as pure functions: the patient join, Table 1, the response summary, clinical checks."""
import math
from pathlib import Path

import pandas as pd
import pytest

from mrdflow.cohort._tables import (
    add_derived,
    build_patients,
    read_tsv,
    response_summary,
    table1,
    table1_html,
    write_tsv,
)
from mrdflow.config import read_clinical
from mrdflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEMO_CLINICAL = REPO / "resources" / "demo" / "clinical.tsv"


def _m(sample, patient, specimen, visit, day=0, infusion=1, status="ok", **readouts):
    return {"sample_id": sample, "patient_id": patient, "specimen": specimen, "visit": visit, "day": day,
            "infusion": infusion, "status": status, "errors": [], **readouts}


def _clin(pid, **kw):
    row = {"patient_id": pid, "age": 60, "sex": "M", "ig_type": "IgG", "riss": "II", "prior_lines": 4,
           "lymphodepletion": "full", "cart_dose_cells": 3.0e8, "infusion1_date": "2025-01-01",
           "best_response": "PR", "follow_up_months": 6.0}
    row.update(kw)
    return row


def _cart(pid, day, cells, infusion=1, pct=5.0):
    return _m(f"{pid}_I{infusion}_D{day:03d}", pid, "PB", "serial" if day <= 28 else "followup", day=day,
              infusion=infusion, cart={"cells_per_ul": cells, "car_pct_cd3": pct})


def test_join_by_visit_not_file_name():
    metrics = [
        # sample IDs deliberately say nothing about the visit: the sheet's visit/day decide
        _m("S1", "PT01", "BM", "baseline", day=-5, pc={"pc_pct": 22.5, "aberrant_pc_pct": 21.0}),
        _m("S2", "PT01", "BM", "week4", day=28, pc={"pc_pct": 0.01},
           mrd={"mrd_status": "negative", "mrd_level": None, "sensitivity": 8e-6, "mrd_reason": "A < LOD"}),
        _m("S3", "PT01", "PB", "baseline", day=-5,
           nk={"nkg2a_pct": 19.5, "nk_pct_lymph": 14.0, "nkg2a_threshold_source": "fmo"}),
        *[_cart("PT01", d, c) for d, c in ((0, 0.0), (7, 40.0), (14, 100.0), (28, 10.0), (60, 2.0), (90, 0.5))],
        *[_cart("PT01", d, c, infusion=2) for d, c in ((0, 1.0), (10, 70.0), (28, 5.0))],
    ]
    t = build_patients([_clin("PT01", infusion2_date="2025-04-01", infusion2_dose_cells=4.5e8)], metrics)
    p = t.patients.iloc[0]
    assert p["baseline_pc_pct"] == 22.5 and p["baseline_nkg2a_pct"] == 19.5
    assert p["w4_mrd_status"] == "negative" and p["w4_sensitivity"] == 8e-6
    assert p["cart_cmax"] == 100.0 and p["cart_tmax_day"] == 14.0 and p["cart_persistence_day"] == 60.0
    # linear trapezoid 0-28: (0+40)/2*7 + (40+100)/2*7 + (100+10)/2*14
    assert math.isclose(p["cart_auc_0_28"], 140 + 490 + 770)
    assert p["cart_cmax_i2"] == 70.0 and p["cart_tmax_day_i2"] == 10.0
    assert p["dose_level"] == "3.0×10^8"
    assert p["responder"] and not p["cr_or_better"] and p["w4_mrd_negative"] is True
    assert p["missing_readouts"] == ""
    assert list(t.kinetics["infusion"]) == [1] * 6 + [2] * 3
    # one clock for timelines: infusion 2 (2025-04-01) is day 90 after infusion 1 (2025-01-01)
    assert list(t.kinetics.loc[t.kinetics.infusion == 2, "day_since_infusion1"]) == [90, 100, 118]
    assert list(t.mrd["day_since_infusion1"]) == [28]


def test_missing_readouts_say_why():
    metrics = [
        _m("PT02_BM_baseline", "PT02", "BM", "baseline", status="failed"),
        _m("PT02_BM_week4", "PT02", "BM", "week4", pc={"pc_pct": 1.0},
           mrd={"mrd_status": "not_evaluable", "sensitivity": 4e-5, "mrd_reason": "10^-5 not reached"}),
    ]
    metrics[0]["errors"] = [{"tube": "ngf1", "error": "DATA segment truncated"}]
    p = build_patients([_clin("PT02")], metrics).patients.iloc[0]
    assert p["baseline_pc_pct"] is None or math.isnan(p["baseline_pc_pct"])
    assert "baseline PC %: PT02_BM_baseline failed (ngf1: DATA segment truncated)" in p["missing_readouts"]
    assert "baseline NKG2A %: no sample" in p["missing_readouts"]
    assert "CAR-T kinetics: no sample" in p["missing_readouts"]
    assert p["w4_mrd_negative"] is None  # not evaluable is neither negative nor positive


def _demo_patients(pc, nkg2a, mrd):
    clin = read_clinical(DEMO_CLINICAL)
    df = pd.DataFrame(clin)
    df["baseline_pc_pct"], df["baseline_nkg2a_pct"], df["w4_mrd_status"] = pc, nkg2a, mrd
    return add_derived(df)


PC = [20.0, 31.0, 8.0, 42.0, 25.0, 0.5, 53.5, 18.0]       # median 22.5, range 0.5-53.5
NKG2A = [19.5, 31.8, 11.2, 27.3, 5.0, 36.7, 22.0, 14.0]    # median 20.75, range 5.0-36.7
MRD = ["negative", "positive", "negative", "negative", "negative", "negative", "negative", "positive"]


def test_table1_reproduces_the_poster_from_the_demo_sheet():
    t1 = table1(_demo_patients(PC, NKG2A, MRD))
    val = {(r.characteristic.split(",")[0], r.category): r.value for r in t1.itertuples()}
    assert val[("Age", "")] == "63.5 (49, 70)"
    assert val[("Sex", "Male")] == "4 (50.0)" and val[("Sex", "Female")] == "4 (50.0)"
    assert val[("Type of immunoglobulin at diagnosis", "IgG")] == "2 (25.0)"
    assert val[("Type of immunoglobulin at diagnosis", "IgA")] == "4 (50.0)"
    assert val[("Type of immunoglobulin at diagnosis", "κ Light Chain")] == "2 (25.0)"
    assert val[("R-ISS stage at screening", "I")] == "0"
    assert val[("R-ISS stage at screening", "II")] == "5 (62.5)"
    assert val[("R-ISS stage at screening", "III")] == "3 (37.5)"
    assert val[("Cytogenetic high risk", "yes")] == "1 (12.5)"
    assert val[("Prior lines of therapy", "")] == "4.5 (3, 9)"
    assert val[("ASCT", "yes")] == "5 (62.5)"
    assert val[("Extramedullary plasmacytoma", "yes")] == "1 (12.5)"
    assert val[("Proportion of plasma cells", "")] == "22.50 (0.5, 53.5)"
    assert val[("NKG2A % in NK cells at baseline", "")] == "20.75 (5.0, 36.7)"
    assert val[("Lymphodepletion dose", "Full dose")] == "6 (75.0)"
    assert val[("Lymphodepletion dose", "Reduced dose")] == "2 (25.0)"
    doses = {k[1]: v for k, v in val.items() if k[0] == "CAR-T dose (cells)"}
    assert doses == {"1.5×10^8": "1 (12.5)", "3.0×10^8": "5 (62.5)", "4.5×10^8": "2 (25.0)"}
    assert set(t1.loc[t1.source == "flow", "characteristic"]) == {
        "Proportion of plasma cells, median (range), %", "NKG2A % in NK cells at baseline, median (range), %"}
    html = table1_html(t1)
    assert "N=8" in html and "22.50 (0.5, 53.5)" in html and "κ Light Chain" in html


def test_table1_counts_missing_flow_values():
    pc = PC[:-1] + [float("nan")]
    t1 = table1(_demo_patients(pc, NKG2A, MRD))
    row = t1[t1.characteristic.str.startswith("Proportion of plasma cells")].iloc[0]
    assert row["n"] == 7 and row["n_missing"] == 1 and row["median"] == 25.0


def test_response_summary_on_the_demo_sheet():
    rs = response_summary(_demo_patients(PC, NKG2A, MRD))
    overall = rs[rs.group_by == "overall"].iloc[0]
    assert (overall.n, overall.orr_n, overall.cr_n, overall.vgpr_or_better_n) == (8, 6, 3, 4)
    assert overall.orr == "6/8 (75.0%)"
    assert (overall.n_sCR, overall.n_CR, overall.n_VGPR, overall.n_PR) == (2, 1, 1, 2)
    assert (overall.mrd_negative_n, overall.mrd_evaluable_n) == (6, 8)
    full = rs[(rs.group_by == "lymphodepletion") & (rs.group == "full")].iloc[0]
    assert (full.n, full.orr_n, full.cr_n) == (6, 5, 3)
    by_dose = rs[rs.group_by == "dose_level"].set_index("group")
    assert list(by_dose.n) == [1, 5, 2] and by_dose.loc["4.5×10^8", "cr_n"] == 1


def test_mrd_rate_leaves_not_evaluable_out_of_the_denominator():
    mrd = ["negative", "not_evaluable", None, "negative", "positive", "negative", "negative", "negative"]
    overall = response_summary(_demo_patients(PC, NKG2A, mrd)).iloc[0]
    assert (overall.mrd_negative_n, overall.mrd_evaluable_n, overall.mrd_not_evaluable_n) == (5, 6, 2)
    assert overall.mrd_negative == "5/6 (83.3%)"


def test_tsv_round_trip(tmp_path):
    df = pd.DataFrame({"a": ["x", None], "b": [1.5, float("nan")], "c": [True, False]})
    write_tsv(df, tmp_path / "t.tsv")
    assert (tmp_path / "t.tsv").read_text().splitlines() == ["a\tb\tc", "x\t1.5\tTrue", "NA\tNA\tFalse"]
    back = read_tsv(tmp_path / "t.tsv")
    assert back["a"].isna().iloc[1] and back["b"].iloc[0] == 1.5


def _write_clinical(path, rows):
    cols = list(rows[0])
    lines = ("\t".join("" if r.get(c) is None else str(r[c]) for c in cols) + "\n" for r in rows)
    path.write_text("\t".join(cols) + "\n" + "".join(lines))
    return path


def test_clinical_cross_checks(tmp_path):
    base = dict(_clin("PT01"), infusion2_date=None, infusion2_dose_cells=None, best_response_date=None,
                progression=None, progression_date=None)
    rows = [base, dict(base, patient_id="PT01"), dict(base, patient_id="PT03", infusion2_date="2025-03-01"),
            dict(base, patient_id="PT04", best_response_date="2024-12-01"),
            dict(base, patient_id="PT05", progression="yes")]
    p = _write_clinical(tmp_path / "clinical.tsv", rows)
    with pytest.raises(ConfigError) as e:
        read_clinical(p, sample_patients=["PT01", "PT03", "PT04", "PT05", "PT09"])
    msg = str(e.value)
    assert "line 3 (patient_id=PT01): duplicate patient_id (first on line 2)" in msg
    assert "line 4 (patient_id=PT03), columns 'infusion2_date'/'infusion2_dose_cells': give both or neither" in msg
    assert "line 5 (patient_id=PT04), column 'best_response_date': 2024-12-01 is before infusion1_date" in msg
    assert "line 6 (patient_id=PT05), column 'progression_date': required" in msg
    assert "patient_id=PT09: in the sample sheet but not in the clinical sheet" in msg


def test_clinical_patient_without_samples(tmp_path):
    p = _write_clinical(tmp_path / "clinical.tsv", [_clin("PT01"), _clin("PT02")])
    with pytest.raises(ConfigError, match=r"line 3 \(patient_id=PT02\): patient has no row in the sample sheet"):
        read_clinical(p, sample_patients=["PT01"])
    assert [r["patient_id"] for r in read_clinical(p, sample_patients=["PT01", "PT02"])] == ["PT01", "PT02"]


def test_demo_clinical_sheet_matches_the_demo_sample_sheet():
    import csv

    sheet = csv.DictReader(open(REPO / "resources" / "demo" / "samples.tsv"), delimiter="\t")
    rows = read_clinical(DEMO_CLINICAL, sample_patients={r["patient_id"] for r in sheet})
    assert len(rows) == 8
