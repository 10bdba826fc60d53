"""The MRD call: pure-function cases from the brief, section 3."""
import pytest

from mrdflow.sample import MRDSettings, TubeCount, hemodilution, mrd_call


def test_negative_at_1e5_with_2e6_cells():
    r = mrd_call([TubeCount("ngf1", 1_000_000, 3), TubeCount("ngf2", 1_000_000, 2)])
    assert r.status == "negative"
    assert r.n_nucleated == 2_000_000 and r.n_aberrant == 5
    assert r.sensitivity == pytest.approx(1e-5) and r.depth == pytest.approx(1e-5)
    assert r.level is None


def test_depth_1e6_with_1e7_cells():
    r = mrd_call([TubeCount("ngf1", 10_000_000, 0)])
    assert r.status == "negative" and r.sensitivity == pytest.approx(2e-6) and r.depth == pytest.approx(1e-5)
    r = mrd_call([TubeCount("ngf1", 25_000_000, 0)])
    assert r.sensitivity == pytest.approx(8e-7) and r.depth == pytest.approx(1e-6)


def test_positive_quantifiable_and_below_lloq():
    r = mrd_call([TubeCount("ngf1", 1_000_000, 150), TubeCount("ngf2", 1_000_000, 90)])
    assert r.status == "positive" and r.quantifiable and r.level == pytest.approx(240 / 2e6)
    r = mrd_call([TubeCount("ngf1", 2_000_000, 30)])
    assert r.status == "positive" and not r.quantifiable and "below LLOQ" in r.reason


def test_lod_boundary():
    assert mrd_call([TubeCount("t", 3_000_000, 19)]).status == "negative"
    assert mrd_call([TubeCount("t", 3_000_000, 20)]).status == "positive"


def test_too_few_cells_is_not_evaluable_never_negative():
    r = mrd_call([TubeCount("ngf1", 500_000, 0), TubeCount("ngf2", 600_000, 0)])
    assert r.status == "not_evaluable" and "does not reach 1e-05" in r.reason and r.depth is None


def test_hemodilution_policy():
    tubes = [TubeCount("ngf1", 3_000_000, 2)]
    assert mrd_call(tubes, hemodiluted=True).status == "not_evaluable"
    r = mrd_call(tubes, MRDSettings(hemodilution_policy="flag"), hemodiluted=True)
    assert r.status == "negative" and r.hemodilution and "hemodilution" in r.reason


def test_failed_tubes_are_excluded():
    r = mrd_call([TubeCount("ngf1", 2_500_000, 1),
                  TubeCount("ngf2", 2_500_000, 60, qc_passed=False, qc_reason="flow-rate")])
    assert r.status == "negative" and r.tubes == ("ngf1",) and "flow-rate" in r.reason
    r = mrd_call([TubeCount("ngf1", 2_500_000, 1, qc_passed=False, qc_reason="clog")])
    assert r.status == "not_evaluable" and "clog" in r.reason


def test_settings_are_configurable_and_checked():
    assert mrd_call([TubeCount("t", 200_000, 0)], MRDSettings(required_sensitivity=1e-4)).status == "negative"
    with pytest.raises(ValueError):
        MRDSettings(lod_events=60, lloq_events=50)


def test_hemodilution_flags():
    h = hemodilution(1_000_000, mast=5, bcp=20, nrbc=1000)  # 0.0005%, 0.002%, 0.1%
    assert h.flagged and set(h.below) == {"mast_cells", "b_cell_precursors", "nucleated_red_cells"}
    h = hemodilution(1_000_000, mast=100, bcp=5000, nrbc=20000)
    assert not h.flagged and h.reason() == ""
