"""Validation against planted truth: a tube is checked for the read-out its panel feeds (the panel's
``readout:``), whatever the panel is called."""
import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mrdflow.demo import Bars, validate, validate_cohort
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
