"""Locating a marker's populations in pooled gate-unit values (mrdflow.calibration._modes)."""
import numpy as np
import pytest

from mrdflow.calibration import locate_main, locate_modes, populations


def _mix(*parts, seed=1):
    """Normal populations (centre, sd, n) in gate units, shuffled."""
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(c, s, n) for c, s, n in parts])
    rng.shuffle(v)
    return v


def test_two_populations_found_within_002():
    v = _mix((0.15, 0.04, 14000), (0.70, 0.05, 6000))
    m = locate_modes(v)
    assert m.negative.position == pytest.approx(0.15, abs=0.02)
    assert m.positive.position == pytest.approx(0.70, abs=0.02)
    assert m.negative.share == pytest.approx(0.7, abs=0.03)
    assert m.positive.share == pytest.approx(0.3, abs=0.03)
    assert 0 < m.positive.prominence <= 1 and m.negative.prominence == pytest.approx(1.0)
    assert m.events == v.size and len(m.populations) == 2


def test_one_population_positive_not_found_with_reason():
    m = locate_modes(_mix((0.2, 0.05, 10000)))
    assert m.negative.position == pytest.approx(0.2, abs=0.02)
    assert m.positive is None
    assert "no population at least" in m.positive_reason and "no positive cells" in m.positive_reason


def test_populations_not_separated_by_a_valley():
    m = locate_modes(_mix((0.30, 0.07, 10000), (0.45, 0.07, 8000)))
    assert m.positive is None


def test_expected_positions_choose_the_population_the_template_means():
    # negative, CD56dim (the template's positive) and a smaller CD56bright population
    v = _mix((0.11, 0.03, 8000), (0.58, 0.04, 4000), (0.79, 0.03, 800))
    assert locate_modes(v).positive.position == pytest.approx(0.79, abs=0.02)  # brightest
    m = locate_modes(v, expected_negative=0.12, expected_positive=0.60)
    assert m.positive.position == pytest.approx(0.58, abs=0.02)
    far = locate_modes(v, expected_negative=0.35, expected_positive=None)
    assert far.negative is None and "expected negative 0.35" in far.negative_reason
    miss = locate_modes(_mix((0.11, 0.03, 8000), (0.45, 0.04, 4000)), expected_negative=0.1, expected_positive=0.8)
    assert miss.negative is not None and miss.positive is None and "expected positive 0.80" in miss.positive_reason


def test_weights_let_each_file_count_the_same():
    a = _mix((0.1, 0.03, 40000), seed=2)  # a big file without positive cells
    b = _mix((0.1, 0.03, 1000), (0.7, 0.04, 1000), seed=3)  # a small one with them
    v = np.concatenate([a, b])
    assert locate_modes(v).positive is None  # 2% of the events: not a population
    w = np.concatenate([np.full(a.size, 1 / a.size), np.full(b.size, 1 / b.size)])
    m = locate_modes(v, w)
    assert m.positive.position == pytest.approx(0.7, abs=0.02) and m.positive.share == pytest.approx(0.25, abs=0.03)


def test_too_few_events_and_non_finite_values():
    m = locate_modes(np.array([0.1, 0.2, np.nan]))
    assert m.negative is None and "too few events" in m.negative_reason
    assert populations(np.full(10, np.inf)) == ()


def test_main_population_of_scatter_is_the_largest():
    m = locate_main(_mix((0.05, 0.01, 2000), (0.2, 0.02, 7000), (0.33, 0.03, 3000)))
    assert m.main.position == pytest.approx(0.2, abs=0.01)
    assert locate_main(np.zeros(3)).main is None
