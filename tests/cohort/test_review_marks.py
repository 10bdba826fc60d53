"""Read-outs on unsure gates in the cohort tables and the report: marked, with the gate's plot;
tables without flags keep every existing column as it was."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from mrdflow.cohort import ReportInputs, build_report
from mrdflow.cohort._tables import build_patients, sample_metrics_rows, write_table, write_tsv
from mrdflow.metrics import SampleMetrics, write_metrics

WHY = "PC: CD38.min 0.800 on its search window's edge [0.60, 0.80]"


def _tube(panel, fcs, review=()):
    return {"panel": panel, "role": "stain", "fcs": fcs, "events": 20000, "time_ok": 20000, "singlets": 19000,
            "time_removed_pct": 0.0, "time_segments": [], "time_reasons": [], "flow_rate_failed": False,
            "nonfinite_events": 0, "gates": {}, "gate_review": [{"gate": g, "reason": WHY} for g in review]}


def _marrow(sample, visit, day, review=()):
    """A marrow sample's metrics.json object; ``review``: the unsure gates of its tube ngf1."""
    items = [{"readout": r, "gate": "PC", "tube": "ngf1", "reason": WHY}
             for r in ("PC %", "aberrant PCs", "MRD call") if "PC" in review]
    why = f"ngf1 PC: {WHY}" if items else ""
    return {
        "sample_id": sample, "patient_id": "PT01", "specimen": "BM", "visit": visit, "day": day, "infusion": 1,
        "status": "review" if items else "ok", "errors": [], "review_needed": items,
        "tubes": {"ngf1": _tube("ngf_tube1", f"{sample}.fcs", review)},
        "pc": {"n_nucleated": 20000, "n_pc": 28, "pc_pct": 0.14, "n_aberrant_pc": None, "aberrant_pc_pct": None,
               "n_normal_pc": None, "aberrant_pct_of_pc": None, "pc_kappa": 0, "pc_lambda": 0,
               "pc_kappa_lambda_ratio": None, "aberrant_light_chain": "", "aberrant_by_tube": {},
               "review_needed": bool(items), "review_reason": why},
        "mrd": {"mrd_status": "not_evaluable", "mrd_reason": "no PC model (cohort clustering did not run)",
                "review_needed": bool(items), "review_reason": why, "hemodilution": False,
                "hemodilution_reason": "", "hemodilution_pct": {}},
    }


def _written(tmp_path: Path, objs) -> list[Path]:
    """The objects written as metrics.json through the contract (schema-checked)."""
    files = []
    for o in objs:
        p = tmp_path / o["sample_id"] / "metrics.json"
        p.parent.mkdir(parents=True)
        write_metrics(p, SampleMetrics.from_dict(o))
        files.append(p)
    return files


CLINICAL = [{"patient_id": "PT01", "cart_dose_cells": 3.0e8, "infusion1_date": "2025-01-01", "best_response": "PR"}]


def test_flagged_readouts_in_every_table(tmp_path):
    files = _written(tmp_path, [_marrow("PT01_BM_baseline", "baseline", -5, review=("PC",)),
                                _marrow("PT01_BM_week4", "week4", 28)])
    rows = sample_metrics_rows(files)
    write_table(rows, tmp_path / "sample_metrics.tsv")
    sm = pd.read_csv(tmp_path / "sample_metrics.tsv", sep="\t", keep_default_na=False)
    assert list(sm.columns[:9]) == ["sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status",
                                    "errors", "review_needed"]
    flagged, sure = sm.iloc[0], sm.iloc[1]
    assert flagged["status"] == "review" and flagged["gate_review"] == "ngf1:PC"
    assert flagged["review_needed"].startswith(f"PC % (ngf1 PC: {WHY}) | aberrant PCs (ngf1 PC: ")
    assert "MRD call (ngf1 PC" in flagged["review_needed"] and str(flagged["mrd_review_needed"]) == "True"
    assert sure["status"] == "ok" and sure["review_needed"] == "" and sure["gate_review"] == ""

    metrics = [json.loads(f.read_text()) for f in files]
    t = build_patients(CLINICAL, metrics)
    p = t.patients.iloc[0]
    assert p["baseline_pc_pct"] == 0.14  # the value stands, marked
    assert p["review_needed"] == f"baseline PC %: PT01_BM_baseline PC %: ngf1 PC ({WHY}); aberrant PCs: ngf1 PC ({WHY})"
    assert list(t.mrd["review"]) == [f"MRD call: ngf1 PC ({WHY})", ""]


def test_no_flags_leave_existing_columns_as_they_were():
    """A sample without review keys (written before gate review) and the same sample with empty
    ones give the same tables, plus empty review columns."""
    new = [_marrow("PT01_BM_baseline", "baseline", -5), _marrow("PT01_BM_week4", "week4", 28)]
    old = json.loads(json.dumps(new))
    for o in old:
        del o["review_needed"]
        for section in ("pc", "mrd"):
            del o[section]["review_needed"], o[section]["review_reason"]
        for q in o["tubes"].values():
            del q["gates"], q["gate_review"]
    a, b = build_patients(CLINICAL, old), build_patients(CLINICAL, new)
    for name in ("patients", "mrd", "kinetics"):
        before, after = getattr(a, name), getattr(b, name)
        pd.testing.assert_frame_equal(before, after)
    assert list(b.patients["review_needed"]) == [""] and list(b.mrd["review"]) == ["", ""]


def test_report_lists_flagged_sample_with_the_gate_plot(tmp_path):
    res = tmp_path / "results"
    files = _written(res / "samples", [_marrow("PT01_BM_baseline", "baseline", -5, review=("PC",)),
                                       _marrow("PT01_BM_week4", "week4", 28)])
    (res / "cohort").mkdir(parents=True)
    write_table(sample_metrics_rows(files), res / "cohort" / "sample_metrics.tsv")
    tables = build_patients(CLINICAL, [json.loads(f.read_text()) for f in files])
    write_tsv(tables.mrd, res / "cohort" / "mrd_timeline.tsv")
    plots = res / "samples" / "PT01_BM_baseline" / "plots" / "ngf1"
    plots.mkdir(parents=True)
    for name in ("03_Nucleated.png", "04_PC.png", "05_NRBC.png"):
        (plots / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    inputs = ReportInputs.under(tmp_path, inventory=res / "inventory.tsv", samples=tmp_path / "samples.tsv",
                                clinical=tmp_path / "clinical.tsv", plots=sorted((res / "samples").glob("*/plots")))
    page = build_report(inputs, res / "report.html", config={}).read_text(encoding="utf-8")
    qc = re.search(r'<section id="qc">(.*?)</section>', page, re.S).group(1)
    review = qc[qc.index("Read-outs to review"):]
    assert "PT01_BM_baseline" in review and "PT01_BM_week4" not in review
    assert 'href="samples/PT01_BM_baseline/plots/ngf1/04_PC.png"' in review
    assert "status-review" in review and "MRD call (ngf1 PC" in review
    failed = qc[qc.index("Failed and partial samples"):qc.index("QC flags")]
    assert "PT01_BM_baseline" not in failed  # every tube was analysed: a review, not a failure
    mrd = re.search(r'<section id="mrd">(.*?)</section>', page, re.S).group(1)
    assert "Review (unsure gate)" in mrd and f"MRD call: ngf1 PC ({WHY.replace(chr(39), '&#x27;')})" in mrd


@pytest.mark.parametrize("status", ["ok", "review"])
def test_status_review_in_the_schema(tmp_path, status):
    obj = _marrow("S", "baseline", -5, review=("PC",) if status == "review" else ())
    assert write_metrics(tmp_path / "m.json", SampleMetrics.from_dict(obj))["status"] == status
