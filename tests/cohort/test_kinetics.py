"""CAR-T absolute counts and kinetics (pure functions)."""
import pytest

from mrdflow.cohort import kinetics
from mrdflow.sample import absolute_count


def test_absolute_count_formula_and_ci():
    r = absolute_count(car_events=400, bead_events=5000, beads_per_tube=50000, blood_volume_ul=50)
    assert r.cells_per_ul == pytest.approx(400 / 5000 * 50000 / 50)
    lo, hi = r.ci95
    assert lo < r.cells_per_ul < hi
    assert absolute_count(0, 5000, 50000, 50).cells_per_ul == 0
    assert absolute_count(10, 0, 50000, 50).cells_per_ul is None


def test_kinetics_trapezoid():
    k = kinetics([0, 4, 7, 10, 14, 21, 28, 56], [0, 10, 100, 60, 20, 5, 2, 0.5], lloq=1)
    assert k.cmax == 100 and k.tmax_day == 7
    expected = ((0 + 10) / 2 * 4 + (10 + 100) / 2 * 3 + (100 + 60) / 2 * 3 + (60 + 20) / 2 * 4 + (20 + 5) / 2 * 7
                + (5 + 2) / 2 * 7)
    assert k.auc_0_28 == pytest.approx(expected)
    assert k.persistence_day == 28 and k.auc_complete


def test_kinetics_missing_day28_is_interpolated_and_gaps_skipped():
    k = kinetics([0, 7, 14, 35], [0, 70, None, 0], lloq=1)
    assert k.n_points == 3
    assert k.auc_0_28 == pytest.approx(0.5 * 70 * 7 + 0.5 * (70 + 70 * 7 / 28) * 21)


def test_kinetics_never_above_lloq():
    k = kinetics([0, 7], [0, 0.2], lloq=1)
    assert k.persistence_day is None and not k.auc_complete
