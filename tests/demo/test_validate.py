"""Validation against planted truth: a tube is checked for the read-out its panel feeds (the panel's
``readout:``), whatever the panel is called."""
import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mrdflow.demo import Bars, PosterNumbers, validate, validate_cohort, validate_timelines
from mrdflow.panels import load_panels

REPO = Path(__file__).resolve().parents[2]
PANELS = load_panels(REPO / "resources" / "panels")
FIELDS = ["file", "sample_id", "patient_id", "specimen", "visit", "day", "tube", "panel", "role",
          "n_nucleated", "pc_pct_of_nucleated", "aberrant_pc", "nkg2a_pct_of_nk", "car_t_events", "cart_per_ul"]


def _write(tmp_path: Path, rows: list[dict], metrics: dict[str, dict]) -> Path:
    truth = tmp_path / "truth.tsv"
    with open(truth, "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, delimiter="\t", lineterminator="\n", restval="")
        w.writeheader()
        w.writerows(rows)
    for sid, m in metrics.items():
        d = tmp_path / "results" / "samples" / sid
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
    return truth


def _nk_row(panel: str) -> dict:
    return {"file": "P1/nk.fcs", "sample_id": "P1_nk", "patient_id": "P1", "specimen": "PB", "visit": "baseline",
            "day": "-5", "tube": "nk", "panel": panel, "role": "stain", "nkg2a_pct_of_nk": "20.0"}


def _marrow_rows(panel1: str, panel2: str) -> list[dict]:
    common = {"sample_id": "P1_bm", "patient_id": "P1", "specimen": "BM", "visit": "baseline", "day": "-5",
              "role": "stain", "n_nucleated": "10000", "pc_pct_of_nucleated": "5.0", "aberrant_pc": "400"}
    return [{**common, "file": "P1/t1.fcs", "tube": "ngf1", "panel": panel1},
            {**common, "file": "P1/t2.fcs", "tube": "ngf2", "panel": panel2}]


def test_checks_follow_the_default_panels_readouts(tmp_path):
    truth = _write(tmp_path, [_nk_row("pb_nk"), *_marrow_rows("ngf_tube1", "ngf_tube2")],
                   {"P1_nk": {"nk": {"nkg2a_pct": 21.0}}, "P1_bm": {"pc": {"pc_pct": 5.1, "n_aberrant_pc": 790}}})
    checks = validate(tmp_path / "results", truth, Bars())
    assert [(c.sample_id, c.readout, c.passed) for c in checks] == [
        ("P1_bm", "PC % of nucleated", True), ("P1_bm", "aberrant PC events", True),
        ("P1_nk", "NKG2A+ % of NK", True)]
    assert checks[1].planted == 800  # both marrow tubes' aberrant PCs


def test_a_renamed_panel_is_checked_by_its_readout(tmp_path):
    panels = {"lab_nk_v2": replace(PANELS["pb_nk"], name="lab_nk_v2"),
              "gated_only": replace(PANELS["pb_nk"], name="gated_only", readout=None)}
    truth = _write(tmp_path, [_nk_row("lab_nk_v2"), {**_nk_row("gated_only"), "sample_id": "P1_other"}],
                   {"P1_nk": {"nk": {"nkg2a_pct": 25.0}}, "P1_other": {"nk": {"nkg2a_pct": 20.0}}})
    checks = validate(tmp_path / "results", truth, Bars(), panels=panels)
    assert [(c.sample_id, c.readout, c.passed) for c in checks] == [("P1_nk", "NKG2A+ % of NK", False)]
    # the same, with the panels given as a folder of YAML files
    folder = tmp_path / "panels"
    folder.mkdir()
    text = (REPO / "resources" / "panels" / "pb_nk.yaml").read_text().replace("name: pb_nk", "name: lab_nk_v2")
    (folder / "lab_nk_v2.yaml").write_text(text)
    assert validate(tmp_path / "results", truth, Bars(), panels=folder) == checks


def test_cohort_nkg2a_truth_comes_from_nk_panels(tmp_path):
    truth = _write(tmp_path, [_nk_row("lab_nk_v2"), *_marrow_rows("ngf_tube1", "ngf_tube2")], {})
    cohort = tmp_path / "results" / "cohort"
    cohort.mkdir(parents=True)
    (cohort / "patients.tsv").write_text(
        "patient_id\tbaseline_pc_pct\tbaseline_nkg2a_pct\tw4_mrd_status\nP1\t5.0\t20.5\t\n")
    (cohort / "response_summary.tsv").write_text("group_by\tgroup\nall\tall\n")
    panels = {**PANELS, "lab_nk_v2": replace(PANELS["pb_nk"], name="lab_nk_v2")}
    checks = {c.readout: c for c in validate_cohort(tmp_path / "results", truth, panels=panels)}
    assert checks["NKG2A % median"].planted == 20.0 and checks["NKG2A % median"].passed
    without = {c.readout: c for c in validate_cohort(tmp_path / "results", truth)}  # lab_nk_v2 unknown
    assert "NKG2A % median" not in without and "PC % median" in without  # no NK truth: nothing to compare


@pytest.mark.parametrize("name", sorted(PANELS))
def test_every_repository_panel_names_a_readout(name):
    assert PANELS[name].readout in ("pc_mrd", "nk", "cart")


# ---------------------------------------------------------------------------------------------
# Over time (issue 13): later marrows, NK counts, the timelines and the per-patient courses
# ---------------------------------------------------------------------------------------------
TIME_FIELDS = [*FIELDS, "infusion", "day_since_infusion1", "nk_cells", "nk_cells_per_ul", "nk_cells_per_ul_planted",
               "patient_nk_baseline_cells_per_ul", "patient_nk_recovery_day"]


def _marrow(sid: str, visit: str, day: int, aberrant: int, nucleated: int) -> list[dict]:
    common = {"sample_id": sid, "patient_id": "P1", "specimen": "BM", "visit": visit, "day": str(day),
              "day_since_infusion1": str(day), "role": "stain", "n_nucleated": str(nucleated),
              "aberrant_pc": str(aberrant), "pc_pct_of_nucleated": "20.0" if visit == "baseline" else ""}
    return [{**common, "file": f"P1/{sid}_{t}.fcs", "tube": t, "panel": p}
            for t, p in (("ngf1", "ngf_tube1"), ("ngf2", "ngf_tube2"))]


def _nk(sid: str, day: int, per_ul: float | None, nk_events: int = 500, **kw) -> dict:
    return {"file": f"P1/{sid}_nk.fcs", "sample_id": sid, "patient_id": "P1", "specimen": "PB",
            "visit": "baseline" if day < 0 else "serial", "day": str(day), "day_since_infusion1": str(day),
            "tube": "nk", "panel": "pb_nk_beads" if per_ul is not None else "pb_nk", "role": "stain",
            "nkg2a_pct_of_nk": "20.0", "nk_cells": str(nk_events),
            "nk_cells_per_ul": "" if per_ul is None else str(per_ul), **kw}


def _time_truth(tmp_path: Path, baseline_count: bool = True, recovery="14") -> Path:
    patient = {"patient_nk_baseline_cells_per_ul": "150" if baseline_count else "",
               "patient_nk_recovery_day": recovery}
    rows = [*_marrow("P1_bm0", "baseline", -5, 40000, 180000), *_marrow("P1_w4", "week4", 28, 0, 2_200_000),
            *_marrow("P1_d90", "followup", 90, 3, 2_200_000), *_marrow("P1_d180", "followup", 180, 0, 200_000),
            _nk("P1_nk0", -5, 150.0 if baseline_count else None),
            _nk("P1_d007", 7, 50.0), _nk("P1_d014", 14, 90.0), _nk("P1_d028", 28, 120.0, nk_events=30)]
    truth = tmp_path / "truth.tsv"
    with open(truth, "w", newline="") as fh:
        w = csv.DictWriter(fh, TIME_FIELDS, delimiter="\t", lineterminator="\n", restval="")
        w.writeheader()
        w.writerows({**r, **patient} for r in rows)
    return truth


def _tables(tmp_path: Path, mrd: dict[str, tuple[str, int]], nk: dict[str, tuple[str, str, int]],
            through: str, recovery: str) -> None:
    cohort = tmp_path / "results" / "cohort"
    cohort.mkdir(parents=True, exist_ok=True)
    lines = ["patient_id\tsample_id\tvisit\tday\tday_since_infusion1\tmrd_status"]
    lines += [f"P1\t{sid}\tx\t{day}\t{day}\t{status}" for sid, (status, day) in mrd.items()]
    (cohort / "mrd_timeline.tsv").write_text("\n".join(lines) + "\n")
    lines = ["patient_id\tsample_id\tvisit\tday\tday_since_infusion1\tnk_cells_per_ul\tnk_count_reason\tnkg2a_pct"]
    lines += [f"P1\t{sid}\tx\t{day}\t{day}\t{count}\t{reason}\t20" for sid, (count, reason, day) in nk.items()]
    (cohort / "nk_timeline.tsv").write_text("\n".join(lines) + "\n")
    (cohort / "patients.tsv").write_text(
        f"patient_id\tmrd_negative_through_day\tnk_recovery_day\nP1\t{through}\t{recovery}\n")


GOOD_MRD = {"P1_bm0": ("positive", -5), "P1_w4": ("negative", 28), "P1_d90": ("negative", 90),
            "P1_d180": ("not_evaluable", 180)}
GOOD_NK = {"P1_nk0": ("148", "", -5), "P1_d007": ("53", "", 7), "P1_d014": ("85", "", 14), "P1_d028": ("150", "", 28)}


def test_timelines_pass_and_name_their_columns(tmp_path):
    truth = _time_truth(tmp_path)
    _tables(tmp_path, GOOD_MRD, GOOD_NK, "90", "14")
    checks = validate_timelines(tmp_path / "results", truth, Bars())
    by = {(c.sample_id, c.readout): c for c in checks}
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    # the day-180 marrow is not evaluable (N = 4e5): no assessment, so negative through day 90
    assert by[("P1 (patient)", "MRD-negative through day")].planted == 90
    assert by[("P1_d180", "MRD timeline, day 180")].planted == "not_evaluable"
    # few NK events (30): the bar is ±10 events' worth, not 10%
    assert by[("P1_d028", "NK timeline /µL, day 28")].bar.startswith("±10 events")
    assert len(checks) == 4 + 1 + 4 + 1


def test_timelines_fail_on_status_count_course_and_recovery(tmp_path):
    truth = _time_truth(tmp_path)
    mrd = {**GOOD_MRD, "P1_d90": ("positive", 90)}
    nk = {**GOOD_NK, "P1_d014": ("100", "", 14)}  # 11% above 90
    _tables(tmp_path, mrd, nk, "", "28")
    failed = {(c.sample_id, c.readout) for c in validate_timelines(tmp_path / "results", truth, Bars()) if not c.passed}
    assert failed == {("P1_d90", "MRD timeline, day 90"), ("P1_d014", "NK timeline /µL, day 14"),
                      ("P1 (patient)", "MRD-negative through day")}  # day 28 is one visit from 14: passes
    _tables(tmp_path, GOOD_MRD, GOOD_NK, "90", "")  # "not reached" is two visits after day 14
    failed = [c.readout for c in validate_timelines(tmp_path / "results", truth, Bars()) if not c.passed]
    assert failed == ["NK recovery day"]
    _tables(tmp_path, GOOD_MRD, GOOD_NK, "90", "7")
    assert all(c.passed for c in validate_timelines(tmp_path / "results", truth, Bars()))
    assert not all(c.passed for c in validate_timelines(tmp_path / "results", truth, Bars(nk_recovery_visits=0)))


def test_timelines_without_beads_want_no_count_and_a_reason(tmp_path):
    truth = _time_truth(tmp_path, baseline_count=False, recovery="")
    nk = {**GOOD_NK, "P1_nk0": ("", "no counting beads in the NK tube", -5)}
    _tables(tmp_path, GOOD_MRD, nk, "90", "")
    by = {(c.sample_id, c.readout): c for c in validate_timelines(tmp_path / "results", truth, Bars())}
    assert by[("P1_nk0", "NK timeline, no count")].passed
    assert by[("P1 (patient)", "NK recovery day")].passed  # no baseline count: no recovery day
    _tables(tmp_path, GOOD_MRD, {**nk, "P1_nk0": ("", "", -5)}, "90", "14")
    by = {(c.sample_id, c.readout): c for c in validate_timelines(tmp_path / "results", truth, Bars())}
    assert not by[("P1_nk0", "NK timeline, no count")].passed  # no reason given
    assert not by[("P1 (patient)", "NK recovery day")].passed  # a day without a baseline count


def test_timelines_missing_rows_and_tables(tmp_path):
    truth = _time_truth(tmp_path)
    assert [c.readout for c in validate_timelines(tmp_path / "results", truth, Bars())] == ["timeline tables"]
    mrd = {k: v for k, v in GOOD_MRD.items() if k != "P1_d90"}
    _tables(tmp_path, mrd, {k: v for k, v in GOOD_NK.items() if k != "P1_d007"}, "90", "14")
    failed = {(c.sample_id, c.readout, c.measured) for c in validate_timelines(tmp_path / "results", truth, Bars())
              if not c.passed}
    assert failed == {("P1_d90", "MRD timeline", "missing"), ("P1_d007", "NK timeline", "missing")}


def test_sample_checks_of_later_marrows_and_nk_counts(tmp_path):
    truth = _time_truth(tmp_path)
    metrics = {"P1_d90": {"pc": {"n_aberrant_pc": 3}, "mrd": {"mrd_status": "negative"}},
               "P1_d180": {"pc": {"n_aberrant_pc": 0}, "mrd": {"mrd_status": "negative"}},
               "P1_d014": {"nk": {"nkg2a_pct": 20.5, "cells_per_ul": 95.0}},
               "P1_nk0": {"nk": {"nkg2a_pct": 20.5, "cells_per_ul": 170.0}}}
    for sid, m in metrics.items():
        d = tmp_path / "results" / "samples" / sid
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
    by = {(c.sample_id, c.readout): c for c in validate(tmp_path / "results", truth, Bars())}
    assert by[("P1_d90", "MRD status")].passed and by[("P1_d90", "MRD status")].planted == "negative"
    assert not by[("P1_d180", "MRD status")].passed  # 4e5 nucleated: not evaluable
    assert by[("P1_d014", "NK cells/µL")].passed  # 95 vs 90: within 10%
    assert not by[("P1_nk0", "NK cells/µL")].passed  # 170 vs 150


def test_poster_pt01_mrd_negative_until_month_8(tmp_path):
    truth = _write(tmp_path, [*_marrow_rows("ngf_tube1", "ngf_tube2")], {})
    cohort = tmp_path / "results" / "cohort"
    cohort.mkdir(parents=True)
    (cohort / "response_summary.tsv").write_text("group_by\tgroup\nall\tall\n")
    for through, ok in (("240", True), ("180", False), ("", False)):
        (cohort / "patients.tsv").write_text("patient_id\tbaseline_pc_pct\tbaseline_nkg2a_pct\tw4_mrd_status\t"
                                             f"mrd_negative_through_day\nPT01\t5.0\t20.5\tnegative\t{through}\n")
        checks = {c.readout: c for c in validate_cohort(tmp_path / "results", truth, PosterNumbers())}
        assert checks["PT01 MRD-negative until month 8"].passed is ok
    no_poster = validate_cohort(tmp_path / "results", truth)
    assert not any("month 8" in c.readout for c in no_poster)


def test_cohort_nkg2a_truth_is_the_baseline_tube(tmp_path):
    serial = {**_nk_row("pb_nk_beads"), "sample_id": "P1_d14", "visit": "serial", "day": "14",
              "nkg2a_pct_of_nk": "40.0"}
    truth = _write(tmp_path, [_nk_row("pb_nk"), serial, *_marrow_rows("ngf_tube1", "ngf_tube2")], {})
    cohort = tmp_path / "results" / "cohort"
    cohort.mkdir(parents=True)
    (cohort / "patients.tsv").write_text(
        "patient_id\tbaseline_pc_pct\tbaseline_nkg2a_pct\tw4_mrd_status\nP1\t5.0\t20.5\t\n")
    (cohort / "response_summary.tsv").write_text("group_by\tgroup\nall\tall\n")
    checks = {c.readout: c for c in validate_cohort(tmp_path / "results", truth)}
    assert checks["NKG2A % median"].planted == 20.0  # not the day-14 tube's 40
