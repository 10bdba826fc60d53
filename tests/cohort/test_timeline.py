"""MRD and host NK over time, per patient: the pure functions of mrdflow.cohort._timeline and the
timeline tables build_patients makes from them."""

from __future__ import annotations

import math

import pytest

from mrdflow.cohort._timeline import MRDAssessment, NKPoint, mrd_course, nk_course

NEG, POS = "negative", "positive"


def _a(day, status, level=None, sens=1e-5):
    return MRDAssessment(day, status, level, sens)


def test_pt01_like_negative_through_month_8_not_yet_sustained():
    c = mrd_course([_a(28, NEG, sens=4.5e-6), _a(90, NEG, sens=9e-6), _a(180, NEG), _a(240, NEG)],
                   follow_up_days=240)
    assert c.negative_through_day == 240 and c.conversion_day == 28 and c.n_assessments == 4
    assert c.sustained_negative is None and "confirmation due by day 393" in c.sustained_reason
    assert c.best_depth == 4.5e-6 and c.best_depth_negative is True


def test_sustained_needs_two_negatives_a_year_apart_without_a_positive_between():
    assert mrd_course([_a(28, NEG), _a(400, NEG)]).sustained_negative is True
    broken = mrd_course([_a(28, NEG), _a(200, POS, 1e-4), _a(400, NEG)], follow_up_days=500)
    assert broken.sustained_negative is False and "positive" in broken.sustained_reason
    assert broken.conversion_day == 400 and broken.negative_through_day == 400
    # a long follow-up without the confirming marrow: not met (no longer "too short")
    missing = mrd_course([_a(28, NEG)], follow_up_days=500)
    assert missing.sustained_negative is False and "no negative assessment" in missing.sustained_reason


def test_conversion_from_positive_and_relapse():
    conv = mrd_course([_a(28, POS, 1e-4), _a(60, NEG, sens=8e-6)])
    assert conv.conversion_day == 60 and conv.negative_through_day == 60 and conv.best_depth == 8e-6
    relapse = mrd_course([_a(28, NEG), _a(90, POS, 2e-3)])
    assert relapse.conversion_day is None and relapse.negative_through_day is None
    assert relapse.last_status == POS and relapse.sustained_negative is False
    never = mrd_course([_a(26, POS, 1.6e-4), _a(60, POS, 3e-4)])
    assert never.best_depth == 1.6e-4 and never.best_depth_negative is False
    assert never.sustained_negative is False and never.conversion_day is None


def test_baseline_and_not_evaluable_marrows_are_no_assessment():
    c = mrd_course([_a(-5, POS, 0.2), _a(28, "not_evaluable"), _a(60, NEG)])
    assert c.n_assessments == 1 and c.conversion_day == 60
    empty = mrd_course([_a(-5, POS, 0.2)])
    assert empty.n_assessments == 0 and empty.sustained_negative is None and empty.negative_through_day is None


def _nk(*pts):
    return [NKPoint(d, c, g) for d, c, g in pts]


def test_nk_recovery_from_a_fraction_of_baseline_and_nk_at_the_cart_peak():
    pts = _nk((-5, 200.0, 20.0), (7, 10.0, 35.0), (14, 40.0, 30.0), (28, 120.0, 25.0), (60, 210.0, 22.0))
    c = nk_course(pts, cart_peak_day=10, fraction_of_baseline=0.5)
    assert c.baseline_cells_per_ul == 200.0 and c.recovery_level == 100.0 and c.recovery_day == 28
    # log-linear between day 7 (10/µL) and day 14 (40/µL): 10 * 4**(3/7)
    assert c.at_cart_peak == pytest.approx(10 * 4 ** (3 / 7))
    assert c.nkg2a_pct_baseline == 20.0 and c.nkg2a_pct_last == 22.0 and c.nkg2a_pct_last_day == 60
    assert c.nkg2a_pct_change == pytest.approx(2.0) and (c.nkg2a_pct_min, c.nkg2a_pct_max) == (20.0, 35.0)
    absolute = nk_course(pts, fraction_of_baseline=0.5, cells_per_ul=30.0)
    assert absolute.recovery_day == 14 and "30 NK cells/µL" in absolute.recovery_reason


def test_nk_without_counts_or_recovery_says_why():
    no_beads = nk_course(_nk((-5, None, 20.0), (14, None, 30.0)), cart_peak_day=10)
    assert no_beads.recovery_day is None and "no baseline NK count" in no_beads.recovery_reason
    assert no_beads.at_cart_peak is None and no_beads.nkg2a_pct_change == pytest.approx(10.0)
    low = nk_course(_nk((-5, 200.0, 20.0), (7, 10.0, 30.0), (28, 50.0, 25.0)))
    assert low.recovery_day is None and "not reached" in low.recovery_reason and "day 28" in low.recovery_reason
    outside = nk_course(_nk((-5, 200.0, 20.0), (7, 10.0, 30.0)), cart_peak_day=60)
    assert outside.at_cart_peak is None


def _metrics(pid, sid, specimen, visit, day, **sections):
    return {"sample_id": sid, "patient_id": pid, "specimen": specimen, "visit": visit, "day": day, "infusion": 1,
            "status": "ok", "errors": [], "tubes": {}, **sections}


def _mrd(status, level=None, sens=1e-5):
    return {"mrd_status": status, "mrd_reason": "", "hemodilution": False, "hemodilution_reason": "",
            "hemodilution_pct": {}, "mrd_level": level, "sensitivity": sens}


def test_build_patients_writes_both_timelines_and_the_per_patient_course():
    from mrdflow.cohort import build_patients

    clinical = [{"patient_id": "P1", "infusion1_date": "2025-01-03", "follow_up_months": 7.9,
                 "best_response": "sCR"}]
    metrics = [
        _metrics("P1", "P1_BM_m8", "BM", "followup", 240, mrd=_mrd(NEG, sens=4e-6), pc={"pc_pct": 0.01}),
        _metrics("P1", "P1_BM_w4", "BM", "week4", 28, mrd=_mrd(NEG), pc={"pc_pct": 0.02}),
        _metrics("P1", "P1_PB_nk0", "PB", "baseline", -5, nk={"nkg2a_pct": 19.5, "cells_per_ul": 150.0,
                                                               "nk_bright_pct_of_nk": 10.0, "nk_dim_pct_of_nk": 90.0}),
        _metrics("P1", "P1_PB_nk14", "PB", "serial", 14, nk={"nkg2a_pct": 30.0, "cells_per_ul": 80.0}),
        _metrics("P1", "P1_PB_nk28", "PB", "serial", 28, nk={"nkg2a_pct": 25.0}),
    ]
    t = build_patients(clinical, metrics)
    assert list(t.mrd["sample_id"]) == ["P1_BM_w4", "P1_BM_m8"]  # by day
    assert list(t.nk["day_since_infusion1"]) == [-5, 14, 28]
    assert t.nk["nk_bright_cells_per_ul"].iloc[0] == pytest.approx(15.0)
    assert "no counting beads" in t.nk["nk_count_reason"].iloc[2] and math.isnan(t.nk["nk_cells_per_ul"].iloc[2])
    row = t.patients.iloc[0]
    assert row["mrd_negative_through_day"] == 240 and row["mrd_conversion_day"] == 28
    assert row["mrd_sustained_negative"] is None and row["mrd_best_depth"] == 4e-6
    assert row["nk_recovery_day"] == 14 and row["nk_baseline_cells_per_ul"] == 150.0
    assert row["nkg2a_pct_last"] == 25.0 and row["nkg2a_pct_change"] == pytest.approx(5.5)


def test_cart_fall_rate_is_the_first_order_rate_after_the_peak():
    from mrdflow.cohort._kinetics import kinetics

    days = [0, 4, 7, 10, 14, 21, 28, 60]
    counts = [0.0, 5.0, 40.0] + [100.0 * math.exp(-0.1 * (d - 10)) for d in days[3:]]
    k = kinetics(days, counts, lloq=1.0)
    assert k.tmax_day == 10 and k.fall_rate_per_day == pytest.approx(0.1, rel=1e-9)
    # below the LLOQ the counts leave the fit; fewer than 3 points: no rate
    assert kinetics([0, 7, 10, 14], [0.0, 5.0, 50.0, 0.5], lloq=1.0).fall_rate_per_day is None
