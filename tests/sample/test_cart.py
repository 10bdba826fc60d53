"""PB CAR-T panel: template gating of simulated serial tubes vs planted truth (cells/µL from
counting beads), the empty CAR+ gate at day 0, bead/volume scaling, and cart_metrics edge cases."""
import csv
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import mrdflow.demo._simulate as sim
from mrdflow.gating import GateStep, load_template
from mrdflow.panels import load_panels
from mrdflow.sample import CART_GATES, CARTError, CARTMetrics, absolute_count, cart_metrics, gate_cart_tube

REPO = Path(__file__).resolve().parents[2]
TINY_SAMPLES = REPO / "config" / "test" / "samples.tsv"
TINY_DESIGN = REPO / "config" / "test" / "design.yaml"
CONFIG = yaml.safe_load((REPO / "config" / "test" / "config.yaml").read_text())
TRANSFORMS = CONFIG["panels"]["pb_cart"]["transform"]
PANEL = load_panels(REPO / "resources" / "panels")["pb_cart"]
TEMPLATE = load_template(REPO / "resources" / "gating", "pb_cart")
REL_TOL = 0.20   # 10,000-event CI tubes; the demo's 50,000-event tubes are all within 10 %
EVENT_TOL = 10   # CAR+ events, for tubes with few CAR-T cells


def _cart_rows() -> list[dict]:
    with open(TINY_SAMPLES) as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if r["panel"] == "pb_cart"]


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """Every CAR-T tube of the tiny cohort (PT01 good expander, PT08 poor; days 0, 7, 14, 28),
    simulated and gated once: {sample_id: (row, TubeGating, CARTMetrics, truth)}."""
    out = tmp_path_factory.mktemp("cart")
    rows = _cart_rows()
    sim.simulate_cohort(TINY_SAMPLES, TINY_DESIGN, out, seed=596, only=[r["sample_id"] for r in rows])
    res = {}
    for r in rows:
        fcs = out / r["fcs"]
        g, m = gate_cart_tube(fcs, PANEL, TEMPLATE, TRANSFORMS, None,
                              float(r["beads_per_tube"]), float(r["blood_volume_ul"]))
        truth = json.loads(fcs.with_suffix(".truth.json").read_text())
        res[r["sample_id"]] = (r, g, m, truth)
    return res


def test_tiny_cohort_has_serial_cart_tubes(gated):
    days = sorted({int(r["day"]) for r, *_ in gated.values()})
    assert days == [0, 7, 14, 28]
    assert {r["patient_id"] for r, *_ in gated.values()} == {"PT01", "PT08"}


def test_cells_per_ul_matches_truth(gated):
    for sid, (_r, _g, m, truth) in gated.items():
        assert m.cells_per_ul is not None, (sid, m.reason)
        expected = truth["cart_per_ul"]  # implied by the planted events and all bead events
        factor = m.beads_per_tube / m.bead_count / m.blood_volume_ul  # cells/µL per CAR+ event
        tol = max(REL_TOL * expected, EVENT_TOL * factor)
        assert abs(m.cells_per_ul - expected) <= tol, (sid, m.cells_per_ul, expected, m.car_threshold_how)
        lo, hi = m.cells_per_ul_ci95
        assert lo <= m.cells_per_ul <= hi


def test_beads_and_time_qc_share_events(gated):
    """Beads are gated on the time-QC'd events only, like the cells: the clogged tube
    (PT08_PB_I1_D007) loses beads in proportion, and every gated bead is a bead."""
    for sid, (_r, g, m, truth) in gated.items():
        removed = g.qc["time"]["removed_fraction"]
        assert m.bead_count <= truth["bead_events"]
        assert m.bead_count >= truth["bead_events"] * (1 - removed) * 0.98, sid
    assert gated["PT08_PB_I1_D007"][1].qc["time"]["removed_fraction"] > 0


def test_day0_gives_no_car_t(gated):
    for sid in ("PT01_PB_I1_D000", "PT08_PB_I1_D000"):
        r, g, m, truth = gated[sid]
        assert truth["car_t_events"] == 0
        assert m.car_count <= 2, (sid, m.car_threshold_how)
        assert m.cells_per_ul < 0.5
        assert m.cd3_count > 50  # the CAR- T cells are there; the cut stays above them
        assert m.car_threshold_source == "gap"
        assert 0.3 <= m.car_threshold <= 0.4


def test_expansion_peak_is_valley_placed(gated):
    r, g, m, truth = gated["PT01_PB_I1_D007"]
    assert m.car_threshold_source == "valley"
    assert m.car_count > 100
    assert abs(m.car_pct_cd3 - truth["car_pct_of_cd3"]) < 5.0
    # CD4 / CD8 shares of CAR-T (planted 40 % CD4)
    n4, n8 = truth["counts"]["cart_cd4"], truth["counts"]["cart_cd8"]
    assert abs(m.car_cd4_pct - 100 * n4 / (n4 + n8)) < 5.0
    assert abs(m.car_cd8_pct - 100 * n8 / (n4 + n8)) < 5.0
    assert m.car_cd4_count + m.car_cd8_count <= m.car_count + 5


def test_poor_expander_stays_low(gated):
    assert all(gated[s][2].cells_per_ul < 10 for s in gated if s.startswith("PT08"))
    assert gated["PT01_PB_I1_D007"][2].cells_per_ul > 30


def test_beads_per_tube_and_volume_scale_the_result(gated):
    r, g, m, truth = gated["PT01_PB_I1_D014"]
    b, v = m.beads_per_tube, m.blood_volume_ul
    double_beads = cart_metrics(g, 2 * b, v)
    double_volume = cart_metrics(g, b, 2 * v)
    assert double_beads.cells_per_ul == pytest.approx(2 * m.cells_per_ul)
    assert double_volume.cells_per_ul == pytest.approx(m.cells_per_ul / 2)
    assert double_beads.cd3_per_ul == pytest.approx(2 * m.cd3_per_ul)
    assert double_beads.car_count == m.car_count and double_beads.bead_count == m.bead_count


def test_missing_tube_figures_give_no_concentration(gated):
    r, g, m, truth = gated["PT01_PB_I1_D014"]
    for b, v in ((None, 50.0), (50000.0, None), (0.0, 50.0)):
        x = cart_metrics(g, b, v)
        assert x.cells_per_ul is None and x.cd3_per_ul is None and x.cells_per_ul_ci95 is None
        assert "positive" in x.reason
        assert x.car_count == m.car_count and x.car_pct_cd3 == m.car_pct_cd3


def test_template_xml_matches_generator():
    spec = importlib.util.spec_from_file_location("mgt", REPO / "scripts" / "make_gating_templates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.TEMPLATES["pb_cart"] is mod.cart
    gen = {gid: path for gid, path in mod.cart().get_gate_ids()}
    xml = {gid: path for gid, path in TEMPLATE.strategy.get_gate_ids()}
    assert gen == xml
    assert xml["Beads"] == ("root", "TimeOK")
    assert xml["CARpos"][-1] == "CD3pos"
    assert set(CART_GATES) <= set(xml)


# ---- pure unit tests (no FCS) -------------------------------------------------------------


def _fake(counts: dict, car_bounds=(0.37, None), how="valley 0.370 in [0.30, 0.40] (500 events)"):
    steps = [GateStep(gid, None, "rect", ()) for gid in counts]
    for s in steps:
        if s.gate_id == "CARpos":
            s.bounds = {"CAR": car_bounds}
            s.how = {"CAR.min": how}
    return SimpleNamespace(steps=steps, count=lambda gid: counts[gid], view=SimpleNamespace(name="fake.fcs"),
                           qc={"time": {"failed": False}})


COUNTS = {"Beads": 10000, "Lymphocytes": 3000, "CD3pos": 2000, "CARpos": 500, "CAR_CD4": 200, "CAR_CD8": 290}


def test_no_beads_gives_none_with_reason():
    m = cart_metrics(_fake({**COUNTS, "Beads": 0}), 50000, 50)
    assert m.cells_per_ul is None and m.cells_per_ul_ci95 is None
    assert "no bead" in m.reason
    assert m.car_pct_cd3 == pytest.approx(25.0)
    a = absolute_count(5, 0, 50000, 50)
    assert a.cells_per_ul is None and "no bead" in a.reason


def test_metrics_arithmetic_and_dict():
    m = cart_metrics(_fake(COUNTS), 50000, 50)
    assert isinstance(m, CARTMetrics)
    assert m.cells_per_ul == pytest.approx(500 / 10000 * 50000 / 50)  # 50 cells/µL
    assert m.cd3_per_ul == pytest.approx(200.0)
    assert m.car_cd4_pct == pytest.approx(40.0) and m.car_cd8_pct == pytest.approx(58.0)
    assert m.car_threshold == pytest.approx(0.37) and m.car_threshold_source == "valley"
    assert m.reason == ""
    d = m.as_dict()
    assert d["cells_per_ul_ci95_low"] < 50 < d["cells_per_ul_ci95_high"]
    assert "cells_per_ul_ci95" not in d and d["car_count"] == 500
    json.dumps(d)


def test_zero_car_and_zero_cd3():
    m = cart_metrics(_fake({**COUNTS, "CD3pos": 0, "CARpos": 0, "CAR_CD4": 0, "CAR_CD8": 0},
                           how="minimum 0.395 in [0.30, 0.40] (0 events)"), 50000, 50)
    assert m.cells_per_ul == 0.0 and m.cells_per_ul_ci95[0] == 0.0 and m.cells_per_ul_ci95[1] > 0
    assert m.car_pct_cd3 is None and m.car_cd4_pct is None
    assert m.car_threshold_source == "gap"
    f = cart_metrics(_fake(COUNTS, how="fixed (template)"), 50000, 50)
    assert f.car_threshold_source == "fixed"


def test_wrong_template_is_rejected():
    with pytest.raises(CARTError, match="CARpos"):
        cart_metrics(_fake({"Beads": 1, "Lymphocytes": 1, "CD3pos": 1}), 50000, 50)
