"""metrics.json: the schema-checked contract between the sample and the cohort stage."""
import json
import math
import os
from pathlib import Path

import pytest

from mrdflow.metrics import (
    MetricsError,
    MRDMetrics,
    SampleMetrics,
    flatten_metrics,
    read_metrics,
    validate_metrics,
    write_metrics,
)

REPO = Path(__file__).resolve().parents[1]


def _tube(panel, fcs, **kw):
    q = {"panel": panel, "role": "stain", "fcs": fcs, "events": 200000, "time_ok": 196000, "singlets": 190000,
         "time_removed_pct": 2.0, "time_segments": [[79.2, 118.9]], "time_reasons": ["drift:CD19,rate"],
         "flow_rate_failed": False, "nonfinite_events": 0}
    q.update(kw)
    return q


def _ident(sample, specimen="BM", visit="week4", day=28, status="ok"):
    return {"sample_id": sample, "patient_id": "PT01", "specimen": specimen, "visit": visit, "day": day,
            "infusion": 1, "status": status}


MARROW = {
    **_ident("PT01_BM_week4"),
    "errors": [],
    "tubes": {"ngf1": _tube("ngf_tube1", "PT01/w4_ngf1.fcs", placement_events=1000000,
                            placement_candidates={"placed_on": "sample and candidates", "candidates": 930000,
                                                  "placement_events": 1840000}),
              "ngf2": _tube("ngf_tube2", "PT01/w4_ngf2.fcs", time_segments=[], time_reasons=[])},
    "pc": {"n_nucleated": 2222963, "n_pc": 665, "pc_pct": 0.029915027825474377, "n_aberrant_pc": 224,
           "aberrant_pc_pct": 0.010076640951738738, "n_normal_pc": 441, "aberrant_pct_of_pc": 33.68421052631579,
           "pc_kappa": 141, "pc_lambda": 195, "pc_kappa_lambda_ratio": 0.7230769230769231,
           "aberrant_light_chain": "lambda", "aberrant_by_tube": {"ngf1": 109, "ngf2": 115}},
    "mrd": {"mrd_status": "positive", "mrd_reason": "224 aberrant PC events >= LOD 20",
            "mrd_level": 0.00010076640951738738, "n_nucleated": 2222963, "n_aberrant_pc": 224,
            "sensitivity": 8.99700084976673e-06, "depth": 1e-05, "quantifiable": True, "tubes_used": ["ngf1", "ngf2"],
            "hemodilution": False, "hemodilution_reason": "",
            "hemodilution_pct": {"mast_cells": 0.0549, "b_cell_precursors": 1.564, "nucleated_red_cells": 10.07}},
}

NO_MODEL = {
    **_ident("PT02_BM_baseline", visit="baseline", day=-5, status="partial"),
    "errors": [{"tube": "ngf1", "error": "PT02/b_ngf1.fcs: DATA segment truncated"}],
    "tubes": {"ngf2": _tube("ngf_tube2", "PT02/b_ngf2.fcs")},
    "pc": {"n_nucleated": 1000, "n_pc": 0, "pc_pct": 0.0, "n_aberrant_pc": None, "aberrant_pc_pct": None,
           "n_normal_pc": None, "aberrant_pct_of_pc": None, "pc_kappa": 0, "pc_lambda": 0,
           "pc_kappa_lambda_ratio": None, "aberrant_light_chain": "", "aberrant_by_tube": {}},
    "mrd": {"mrd_status": "not_evaluable", "mrd_reason": "no PC model (cohort clustering did not run)",
            "hemodilution": False, "hemodilution_reason": "tube 1 (mast cells, BCP) not analysed",
            "hemodilution_pct": {}},
}

NK = {
    **_ident("PT01_PB_baseline_nk", specimen="PB", visit="baseline", day=-5),
    "errors": [],
    "tubes": {"nk": _tube("pb_nk", "PT01/nk.fcs")},
    "nk": {"lymphocytes": 67899, "nk_count": 9451, "nk_pct_lymph": 13.9, "nk_bright_count": 896,
           "nk_bright_pct_of_nk": 9.48, "nk_dim_count": 8450, "nk_dim_pct_of_nk": 89.4, "nkg2a_pos_count": 1879,
           "nkg2a_pct": 19.88, "nkg2a_pct_bright": 85.5, "nkg2a_pct_dim": 12.7, "nkg2a_median": 24.3,
           "nkg2a_median_logicle": 0.138, "nkg2a_median_pos": 7501.7, "nkg2a_median_pos_logicle": 0.656,
           "nkg2a_threshold": 0.276, "nkg2a_threshold_channel": 191.2, "nkg2a_threshold_source": "data",
           "nkg2a_threshold_how": "valley", "t_cells": 52977, "t_cell_nkg2a_pct": 5.47, "fmo_nk_count": None,
           "fmo_nk_above_pct": None},
}

CART = {
    **_ident("PT01_PB_I1_D007", specimen="PB", visit="serial", day=7),
    "errors": [],
    "tubes": {"cart": _tube("pb_cart", "PT01/cart.fcs", flow_rate_failed=True, time_removed_pct=float("nan"))},
    "cart": {"cd3_count": 3915, "car_count": 0, "car_pct_cd3": 0.0, "bead_count": 0, "beads_per_tube": 50000.0,
             "blood_volume_ul": 50.0, "cells_per_ul": None, "cd3_per_ul": None, "reason": "no bead events found",
             "car_cd4_count": 0, "car_cd8_count": 0, "car_cd4_pct": None, "car_cd8_pct": None,
             "car_threshold": 0.354, "car_threshold_source": "gap", "car_threshold_how": "minimum",
             "time_qc_failed": True, "cells_per_ul_ci95_low": None, "cells_per_ul_ci95_high": None},
}

FAILED = {**_ident("PT03_PB_I1_D014", specimen="PB", visit="serial", day=14, status="failed"),
          "errors": [{"tube": "cart", "error": "PT03/cart.fcs: file not found"}], "tubes": {}}

SHAPES = {"marrow": MARROW, "no_model": NO_MODEL, "nk": NK, "cart": CART, "failed": FAILED}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_written_as_before_and_read_back(tmp_path, name):
    """write_metrics writes exactly what json.dump(indent=1, allow_nan=True) wrote before the typed
    model, and read_metrics gives the same object back (key order included)."""
    obj = SHAPES[name]
    path = tmp_path / "metrics.json"
    written = write_metrics(path, SampleMetrics.from_dict(obj))
    assert path.read_text() == json.dumps(obj, indent=1, allow_nan=True)
    assert list(written) == list(obj)
    back = read_metrics(path).as_dict()
    assert json.dumps(back, indent=1) == json.dumps(obj, indent=1)
    assert list(back) == list(obj)


def test_typed_sections():
    m = SampleMetrics.from_dict(MARROW)
    assert m.pc.n_pc == 665 and m.mrd.call.tubes_used == ("ngf1", "ngf2") and m.nk is None
    assert m.tubes["ngf1"].placement_events == 1000000 and m.tubes["ngf2"].placement_events is None
    assert m.tubes["ngf1"].placement_candidates["placed_on"] == "sample and candidates"
    assert m.tubes["ngf2"].placement_candidates is None
    assert m.tubes["ngf1"].time_segments == ((79.2, 118.9),)
    n = SampleMetrics.from_dict(NO_MODEL)
    assert isinstance(n.mrd, MRDMetrics) and n.mrd.call is None and n.errors[0].tube == "ngf1"
    assert SampleMetrics.from_dict(FAILED).pc is None


@pytest.mark.parametrize("change, where", [
    (lambda d: d["mrd"].update(mrd_status="maybe"), r"mrd\.mrd_status: 'maybe' is not one of"),
    (lambda d: d["pc"].pop("n_pc"), r"pc: 'n_pc' is required"),
    (lambda d: d.update(extra=1), r"\(top level\): unknown key\(s\) 'extra'"),
    (lambda d: d["tubes"]["ngf1"].update(events="many"), r"tubes\.ngf1\.events: 'many' is not of type 'integer'"),
    (lambda d: d["mrd"].pop("tubes_used"), r"mrd: 'tubes_used' is a dependency of 'mrd_level'"),
    (lambda d: d.pop("mrd"), r"\(top level\): 'mrd' is a dependency of 'pc'"),
])
def test_error_names_file_and_field(tmp_path, change, where):
    obj = json.loads(json.dumps(MARROW))
    change(obj)
    path = tmp_path / "PT01_BM_week4" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps(obj))
    with pytest.raises(MetricsError, match=f"{path}: {where}"):
        read_metrics(path)
    with pytest.raises(MetricsError, match=where):
        validate_metrics(obj, "x.json")


def test_a_bad_object_is_not_written(tmp_path):
    bad = dict(MARROW, status="great")
    with pytest.raises(MetricsError, match=r"metrics.json: status: 'great' is not one of"):
        write_metrics(tmp_path / "metrics.json", SampleMetrics.from_dict(bad))
    assert not (tmp_path / "metrics.json").exists()


def test_unreadable_file_is_named(tmp_path):
    p = tmp_path / "metrics.json"
    with pytest.raises(MetricsError, match="metrics file not found"):
        read_metrics(p)
    p.write_text("{not json")
    with pytest.raises(MetricsError, match=f"{p}: not valid JSON"):
        read_metrics(p)


def test_flatten_metrics():
    row = flatten_metrics(MARROW)
    assert row["pc_pc_pct"] == MARROW["pc"]["pc_pct"] and row["mrd_tubes_used"] == "ngf1;ngf2"
    assert row["pc_aberrant_by_tube_ngf2"] == 115 and row["mrd_hemodilution_pct_mast_cells"] == 0.0549
    assert row["time_qc_flags"] == "ngf1:1" and row["errors"] == ""
    assert "tubes" not in row and not any(k.startswith("tubes_") for k in row)
    row = flatten_metrics(CART)
    assert math.isnan(SHAPES["cart"]["tubes"]["cart"]["time_removed_pct"]) and row["cart_cells_per_ul"] is None
    assert flatten_metrics(FAILED)["errors"] == "cart: PT03/cart.fcs: file not found"


def test_finish_sample_writes_the_contract(tmp_path):
    """Stage 2 without a PC model: the metrics.json it writes follows the schema and reads back."""
    from mrdflow.sample import HemodilutionSettings, MRDSettings, SampleSettings, finish_sample

    stage1 = {**_ident("PT02_BM_baseline", visit="baseline", day=-5), "errors": [],
              "tubes": {"ngf1": _tube("ngf_tube1", "a.fcs"), "ngf2": _tube("ngf_tube2", "b.fcs")},
              "counts": {"ngf1": {"nucleated": 183748, "pc": 36661, "nrbc": 15158, "mast_cells": 80, "bcp": 2302},
                         "ngf2": {"nucleated": 183780, "pc": 36605, "nrbc": 15233, "pc_kappa": 36058,
                                  "pc_lambda": 538}},
              "gates_files": ["gates.xml"], "pc_events": None, "status": "ok"}
    settings = SampleSettings(panels={}, panel_config={}, gating_dir=tmp_path, mrd=MRDSettings(),
                              hemodilution=HemodilutionSettings())
    m = finish_sample(stage1, tmp_path, settings, None)
    back = read_metrics(tmp_path / "metrics.json")
    assert back.as_dict() == m and back.pc.n_pc == 36661 + 36605 and back.pc.n_aberrant_pc is None
    assert back.mrd.mrd_status == "not_evaluable" and back.mrd.call is None
    assert set(back.mrd.hemodilution_pct) == {"mast_cells", "b_cell_precursors", "nucleated_red_cells"}
    assert (tmp_path / "metrics.json").read_text() == json.dumps(m, indent=1, allow_nan=True)


def test_demo_metrics_follow_the_schema():
    """Every metrics.json of a finished run (``$MRDFLOW_RESULTS``, default ``results/``, when there is
    one) follows the schema and is written back byte for byte."""
    results = Path(os.environ.get("MRDFLOW_RESULTS", REPO / "results"))
    files = sorted((results / "samples").glob("*/metrics.json"))
    if not files:
        pytest.skip(f"no {results}/samples/*/metrics.json here")
    for f in files:
        m = read_metrics(f)
        assert json.dumps(m.as_dict(), indent=1, allow_nan=True) == f.read_text()
