"""The demo over time (issue 13): later marrows, serial PB NK tubes with counting beads, the
planted host NK curve and NKG2A trajectory, the per-patient truths, and the planted
baseline-NKG2A -> CAR-T relation as a design parameter."""
from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

import mrdflow.demo._simulate as sim
from mrdflow.demo import cart_kinetics, nk_planted, patient_truths, relation_factors
from mrdflow.demo._design import NK_BEADS_PANEL, nk_days
from mrdflow.demo._planted import _bm_counts, _n_events, nk_baseline_per_ul, nk_fraction, nk_kinetics

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "resources/demo"
TINY = REPO / "config/test"
TINY_DESIGN = TINY / "design.yaml"
TINY_SAMPLES = TINY / "samples.tsv"


@pytest.fixture(scope="module")
def demo():
    return sim.load_design(DEMO / "design.yaml")


@pytest.fixture(scope="module")
def demo_rows(demo):
    return sim.make_samples(demo)


def _tubes(rows, **kw):
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in kw.items())]


# ----------------------------------------------------------------------------- sample sheets


def test_demo_sheet_serial_nk_tubes_share_the_cart_samples(demo, demo_rows):
    cart_samples = {r["sample_id"] for r in demo_rows if r["tube"] == "cart"}
    serial = [r for r in demo_rows if r["tube"] == "nk" and r["visit"] != "baseline"]
    per_patient = {pid: sorted(int(r["day"]) + (90 if r["infusion"] == 2 else 0)
                               for r in serial if r["patient_id"] == pid) for pid in demo["patients"]}
    assert per_patient == {"PT01": [7, 14, 28, 60, 90], "PT02": [7, 14, 28, 60], "PT03": [7, 14, 28, 60, 90],
                           "PT04": [7, 14, 28, 60, 90], "PT05": [7, 14, 28, 60, 90],
                           "PT06": [7, 14, 28, 60, 90], "PT07": [7, 14, 28, 60, 90], "PT08": [7, 14]}
    for r in serial:  # every one in the CAR-T sample of its day: no new PB sample
        assert r["sample_id"] in cart_samples
        assert r["fcs"] == f"{r['patient_id']}/{r['sample_id']}_nk.fcs"
        assert r["panel"] == NK_BEADS_PANEL and (r["beads_per_tube"], r["blood_volume_ul"]) == (50000, 50)
    # PT04's day 90 is its second infusion's day 0
    (r,) = _tubes(demo_rows, sample_id="PT04_PB_I2_D000", tube="nk")
    assert (r["infusion"], r["day"], r["visit"]) == (2, 0, "serial")
    # the sheet's samples: the marrows added, no PB sample
    old = {r["sample_id"] for r in sim.read_samples_tsv(DEMO / "samples.tsv")}
    assert old == {r["sample_id"] for r in demo_rows}


def test_demo_sheet_baseline_nk_and_fmo_carry_beads(demo, demo_rows):
    for pid, p in demo["patients"].items():
        tubes = _tubes(demo_rows, sample_id=f"{pid}_PB_baseline_nk")
        assert [t["tube"] for t in tubes] == (["nk", "nk_fmo"] if p["nk"].get("fmo") else ["nk"])
        for t in tubes:  # the FMO tube on its stained tube's panel, beads included
            assert t["panel"] == NK_BEADS_PANEL and t["beads_per_tube"] == 50000 and t["blood_volume_ul"] == 50


def test_demo_sheet_later_marrows(demo_rows):
    later = sorted({(r["sample_id"], r["day"]) for r in demo_rows
                    if r["specimen"] == "BM" and r["visit"] == "followup"})
    assert later == [("PT01_BM_D090", 90), ("PT01_BM_D180", 180), ("PT01_BM_D240", 240), ("PT02_BM_D060", 60)]
    for sid, _ in later:
        tubes = _tubes(demo_rows, sample_id=sid)
        assert [(t["tube"], t["panel"], t["infusion"]) for t in tubes] == [("ngf1", "ngf_tube1", 1),
                                                                         ("ngf2", "ngf_tube2", 1)]
    # PT08's week-4 marrow (day 26, after progression) is its last
    assert not _tubes(demo_rows, patient_id="PT08", visit="followup", specimen="BM")


def test_demo_event_counts(demo, demo_rows):
    def n(sid, tube):
        (r,) = _tubes(demo_rows, sample_id=sid, tube=tube)
        return _n_events(demo, r, demo["patients"][r["patient_id"]], 1.0)

    assert n("PT01_BM_D240", "ngf1") == n("PT01_BM_week4", "ngf1") == 1_200_000
    assert n("PT01_PB_baseline_nk", "nk") == n("PT01_PB_baseline_nk", "nk_fmo") == 200_000
    assert n("PT01_PB_I1_D014", "nk") == 40_000
    assert n("PT01_PB_I1_D014", "cart") == 50_000


def test_tiny_sheet_over_time():
    rows = sim.read_samples_tsv(TINY / "samples.tsv")
    nk = [(r["sample_id"], r["panel"], r["beads_per_tube"]) for r in rows if r["tube"] == "nk"]
    assert nk == [("PT01_PB_baseline_nk", "pb_nk", ""), ("PT01_PB_I1_D007", NK_BEADS_PANEL, "50000"),
                  ("PT01_PB_I1_D028", NK_BEADS_PANEL, "50000"), ("PT08_PB_baseline_nk", "pb_nk", "")]
    assert [r["tube"] for r in rows if r["sample_id"] == "PT01_PB_I1_D007"] == ["cart", "nk"]
    assert [(r["tube"], r["visit"], r["day"]) for r in rows if r["sample_id"] == "PT01_BM_D090"] == [
        ("ngf1", "followup", "90"), ("ngf2", "followup", "90")]
    design = sim.load_design(TINY_DESIGN)
    r = next(r for r in rows if r["sample_id"] == "PT01_BM_D090")
    n = _n_events(design, r, design["patients"]["PT01"], 1.0)
    pooled = 2 * (n - round(0.04 * n) - round(0.025 * n))  # the nucleated cells of both tubes
    assert 1.05 <= pooled * 1e-5 / 20 <= 1.1  # reaches 10^-5 (LOD 20) with 5-10% to spare, no more


def test_nk_days_within_follow_up(demo):
    p = copy.deepcopy(demo["patients"]["PT01"])
    p["follow_up_days"] = 30
    assert nk_days(demo, p) == [7, 14, 28]
    p["nk_days"] = [0, 3, 45]
    assert nk_days(demo, p) == [3]  # a day-0 tube would count as the baseline: left out


def test_nk_tube_outside_a_cart_day_gets_its_own_sample(demo):
    d = copy.deepcopy(demo)
    d["patients"] = {"PT03": d["patients"]["PT03"]}
    d["patients"]["PT03"]["nk_days"] = [14, 45]
    rows = sim.make_samples(d)
    (r,) = _tubes(rows, tube="nk", day=45)
    assert (r["sample_id"], r["visit"], r["fcs"]) == ("PT03_PB_I1_D045", "followup", "PT03/PT03_PB_I1_D045_nk.fcs")
    assert [t["tube"] for t in _tubes(rows, sample_id="PT03_PB_I1_D045")] == ["nk"]


# ------------------------------------------------------------------------------- the curves


def test_nk_curve_shape(demo):
    k = nk_kinetics(demo, demo["patients"]["PT01"])
    assert nk_fraction(-30, k) == nk_fraction(-5, k) == 1.0  # baseline until lymphodepletion
    assert nk_fraction(0, k) == pytest.approx(0.1)  # the nadir on day 0
    assert nk_fraction(-2.5, k) == pytest.approx(0.55)
    days = np.arange(0, 400)
    f = np.array([nk_fraction(d, k) for d in days])
    assert np.all(np.diff(f) > 0) and f[-1] == pytest.approx(1.0, abs=1e-6)
    assert nk_fraction(20, k) == pytest.approx(0.1 + 0.9 * (1 - math.exp(-1)))
    # reduced lymphodepletion leaves more NK cells
    assert nk_fraction(0, nk_kinetics(demo, demo["patients"]["PT02"])) == pytest.approx(0.35)


def test_nkg2a_rises_early_and_returns(demo):
    p = demo["patients"]["PT07"]
    at = {d: nk_planted(d, demo, p) for d in (-5, 7, 14, 28, 60, 90, 365)}
    assert at[-5]["nkg2a_pct"] == 5.0 and at[-5]["bright_frac"] == pytest.approx(0.10)
    assert at[14]["nkg2a_pct"] == pytest.approx(25.0) and at[14]["bright_frac"] == pytest.approx(0.20)
    assert at[7]["nkg2a_pct"] > at[-5]["nkg2a_pct"] and at[28]["nkg2a_pct"] < at[14]["nkg2a_pct"]
    assert at[90]["nkg2a_pct"] - 5.0 < 1.0 and at[365]["nkg2a_pct"] == pytest.approx(5.0, abs=1e-6)


def test_baseline_count_keeps_nk_pct_of_lymphocytes(demo):
    for p in demo["patients"].values():
        nk = nk_baseline_per_ul(demo, p)
        assert 100 * nk / (nk + 900 + 60) == pytest.approx(p["nk"]["nk_pct_lymph"])
    p = {**demo["patients"]["PT01"], "nk_kinetics": {"baseline_per_ul": 300}}
    assert nk_baseline_per_ul(demo, p) == 300


def test_planted_recovery_days(demo, demo_rows):
    pt = patient_truths(demo, demo_rows)
    assert {pid: v["nk_recovery_day"] for pid, v in pt.items()} == {
        "PT01": 14, "PT02": 7, "PT03": 28, "PT04": 14, "PT05": 7, "PT06": 14, "PT07": 28, "PT08": None}
    assert pt["PT08"]["nk_baseline_cells_per_ul"] == pytest.approx(0.22 / 0.78 * 960)
    assert "not reached" in pt["PT08"]["nk_recovery_reason"]
    for pid, v in pt.items():  # every scheduled count >= 10% away from the level: a robust day
        p = demo["patients"][pid]
        for d in nk_days(demo, p):
            ratio = nk_planted(d, demo, p)["nk_cells_per_ul"] / v["nk_recovery_level"]
            assert abs(ratio - 1) >= 0.10, (pid, d, ratio)
    tiny = sim.load_design(TINY_DESIGN)
    pt = patient_truths(tiny, sim.read_samples_tsv(TINY_SAMPLES))
    assert all(v["nk_recovery_day"] is None and "no baseline NK count" in v["nk_recovery_reason"]
               for v in pt.values())


# ------------------------------------------------------------------------ simulated NK tubes


@pytest.fixture(scope="module")
def nk_tubes(demo, demo_rows, tmp_path_factory):
    """A few demo NK tubes at 1/4 of their events: PT07 (fewest NK cells) at baseline and at its
    nadir, PT01's baseline with its FMO and day 14 (with that day's CAR-T tube)."""
    out = tmp_path_factory.mktemp("nk_time")
    keep = {("PT07_PB_baseline_nk", "nk"), ("PT07_PB_I1_D007", "nk"), ("PT01_PB_baseline_nk", "nk"),
            ("PT01_PB_baseline_nk", "nk_fmo"), ("PT01_PB_I1_D014", "nk"), ("PT01_PB_I1_D014", "cart")}
    rows = [r for r in demo_rows if (r["sample_id"], r["tube"]) in keep]
    return {(r["sample_id"], r["tube"]): sim.simulate_file(r, demo, out, events_scale=0.25) for r in rows}, out


def test_nk_tube_count_through_the_beads(nk_tubes, demo):
    truths, out = nk_tubes
    for (sid, tube), t in truths.items():
        if tube == "cart":
            continue
        p = demo["patients"][t["patient_id"]]
        planted = nk_planted(t["day_since_infusion1"], demo, p)
        z = np.load(out / t["file"].replace(".fcs", ".labels.npz"))
        names = [str(n) for n in z["names"]]
        nk = int(np.isin(z["labels"], [names.index(n) for n in names if n.startswith("nk_")]).sum())
        beads = int((z["labels"] == names.index("bead")).sum())
        assert (nk, beads) == (t["nk_cells"], t["bead_events"])
        assert t["nk_cells_per_ul"] == pytest.approx(nk / beads * 50000 / 50)
        assert t["nk_cells_per_ul_planted"] == pytest.approx(planted["nk_cells_per_ul"])
        # exact counts: the events reproduce the planted count up to the rounding of both counts
        assert t["nk_cells_per_ul"] == pytest.approx(planted["nk_cells_per_ul"], rel=1 / nk + 1 / beads)
        assert t["nkg2a_pct_of_nk"] == pytest.approx(planted["nkg2a_pct"], abs=100 / nk)
        assert t["nkg2a_pct_of_nk_planted"] == pytest.approx(planted["nkg2a_pct"])
        assert nk >= 60, (sid, nk)  # even PT07's nadir at 1/4 of its events
    base, nadir = truths[("PT07_PB_baseline_nk", "nk")], truths[("PT07_PB_I1_D007", "nk")]
    assert base["nk_pct_of_lymphocytes"] == pytest.approx(8.0, abs=0.2)  # the planted baseline %
    assert nadir["nk_cells_per_ul_planted"] / base["nk_cells_per_ul_planted"] == pytest.approx(
        nk_fraction(7, nk_kinetics(demo, demo["patients"]["PT07"])))
    fmo = truths[("PT01_PB_baseline_nk", "nk_fmo")]
    assert fmo["unstained_markers"] == ["CD159a"] and fmo["bead_events"] > 0


def test_cart_tube_holds_the_same_nk_cells(nk_tubes):
    truths, _ = nk_tubes
    nk, cart = truths[("PT01_PB_I1_D014", "nk")], truths[("PT01_PB_I1_D014", "cart")]
    assert cart["planted"]["host_per_ul"]["nk"] == pytest.approx(nk["nk_cells_per_ul_planted"])
    # and the NK tube's T cells hold that day's CAR-T cells (CD3+, NKG2A knocked out)
    assert nk["planted"]["cart_per_ul_in_blood"] == pytest.approx(cart["cart_per_ul_planted"])


def test_truth_tsv_columns(tmp_path):
    sim.simulate_cohort(TINY_SAMPLES, TINY_DESIGN, tmp_path, events_scale=0.25,
                        only=["PT01_PB_I1_D028", "PT08_PB_baseline_nk"])
    with open(tmp_path / "truth.tsv", newline="") as fh:
        rows = {(r["sample_id"], r["tube"]): r for r in csv.DictReader(fh, delimiter="\t")}
    assert set(rows) == {("PT01_PB_I1_D028", "cart"), ("PT01_PB_I1_D028", "nk"), ("PT08_PB_baseline_nk", "nk")}
    nk = rows[("PT01_PB_I1_D028", "nk")]
    assert nk["day_since_infusion1"] == "28" and nk["panel"] == NK_BEADS_PANEL
    assert abs(float(nk["nk_cells_per_ul"]) / float(nk["nk_cells_per_ul_planted"]) - 1) < 0.01
    assert int(nk["nk_cells"]) > 0 and int(nk["bead_events"]) > 0 and nk["nkg2a_pct_of_nk_planted"]
    plain = rows[("PT08_PB_baseline_nk", "nk")]
    assert plain["nk_cells_per_ul"] == plain["nk_cells_per_ul_planted"] == "" and plain["day_since_infusion1"] == "-5"
    for r in rows.values():  # per patient, on every row
        assert r["patient_nk_recovery_day"] == "" and r["patient_nk_baseline_cells_per_ul"] == ""
        assert r["patient_nk_recovery_reason"].startswith("no baseline NK count")


# ---------------------------------------------------------------------------- later marrows


def test_later_marrow_counts(demo):
    p = demo["patients"]["PT02"]
    counts, planted = _bm_counts(p, "followup", 1_200_000, "ngf1", 60)
    assert planted["aberrant_level_of_nucleated"] == 2.0e-6 and planted["mrd_positive"] is False
    assert "week4_mrd_positive" not in planted
    nucleated = sum(c for n, c in counts.items() if n not in sim.NUCLEATED_EXCLUDE)
    assert counts["pc_aberrant"] == round(2.0e-6 * nucleated)
    w4, planted4 = _bm_counts(p, "week4", 1_200_000, "ngf1", 28)
    assert planted4["week4_mrd_positive"] is True and w4["pc_aberrant"] > 100
    with pytest.raises(ValueError, match="day 61"):
        _bm_counts(p, "followup", 1000, "ngf1", 61)


# ------------------------------------------------------------------- NKG2A -> CAR-T relation


def _with(design, direction):
    d = copy.deepcopy(design)
    d["nkg2a_cart_relation"]["direction"] = direction
    return d


def test_negative_relation_plants_todays_values(demo):
    for p in demo["patients"].values():
        for kin in p["cart"]:
            assert cart_kinetics(demo, p, int(kin["infusion"])) == kin
    d = copy.deepcopy(demo)
    del d["nkg2a_cart_relation"]  # absent: the same
    assert all(cart_kinetics(d, p, 1) == p["cart"][0] for p in d["patients"].values())


@pytest.mark.parametrize("direction, sign", [("negative", -1), ("none", 0), ("positive", 1)])
def test_relation_directions(demo, direction, sign):
    d = _with(demo, direction)
    x = [p["nk"]["nkg2a_pct"] for p in d["patients"].values()]
    kin = [cart_kinetics(d, p, 1) for p in d["patients"].values()]
    auc = [np.trapezoid([sim.cart_concentration(t, k) for t in range(29)]) for k in kin]
    rho = spearmanr(x, auc)[0]
    if sign < 0:
        assert rho < -0.7
    elif sign == 0:
        assert -0.4 < rho < 0  # the rest (dose, lymphodepletion, disease) still tilts it a little
    else:
        assert rho > 0.5
    fc, fk = relation_factors(d, 36.7)  # PT08's NKG2A, above the centre (20.75)
    assert (fc > 1, fk < 1) == ((sign + 1) > 0, (sign + 1) > 0)
    assert relation_factors(d, 20.75) == (1.0, 1.0)


def test_relation_is_refused_when_unknown(demo):
    with pytest.raises(ValueError, match="direction"):
        cart_kinetics(_with(demo, "inverse"), demo["patients"]["PT01"], 1)


def test_positive_relation_in_a_simulated_cart_tube(demo, demo_rows, tmp_path):
    (row,) = _tubes(demo_rows, sample_id="PT08_PB_I1_D007", tube="cart")
    d = _with(demo, "positive")
    t = sim.simulate_file(row, d, tmp_path / "pos", events_scale=0.2)
    ref = sim.simulate_file(row, demo, tmp_path / "neg", events_scale=0.2)
    assert ref["cart_per_ul_planted"] == pytest.approx(sim.cart_concentration(7, demo["patients"]["PT08"]["cart"][0]))
    assert "cart_kinetics" not in ref["planted"]  # negative: today's truth, no extra keys
    fc, _ = relation_factors(d, 36.7)
    assert t["planted"]["cart_kinetics"]["cmax"] == pytest.approx(3 * fc)
    assert t["planted"]["nkg2a_cart_relation"]["direction"] == "positive"
    assert t["cart_per_ul_planted"] > 5 * ref["cart_per_ul_planted"]
    assert t["fingerprint"] != ref["fingerprint"]  # a new direction simulates the tubes again
    json.dumps(t)  # the truth stays JSON
