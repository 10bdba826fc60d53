"""The map of a dimension's gate units and the rules mapped with it (mrdflow.calibration._mapping)."""
import copy

import pytest
import yaml

from mrdflow.calibration import ExpectedMarker, MarkerModes, Population, WindowMap, map_for, map_rules, rule_windows


def _modes(neg=None, pos=None, main=None):
    p = {k: (None if v is None else Population(v, 0.5, 0.5, 1.0)) for k, v in (("negative", neg), ("positive", pos),
                                                                                ("main", main))}
    return MarkerModes(10000, tuple(x for x in p.values() if x), **p, negative_reason="" if neg else "none",
                       positive_reason="" if pos else "no positive cells")


def test_affine_takes_expected_to_found():
    m, note = map_for(ExpectedMarker("CD38", 0.2, 0.8), _modes(0.25, 0.7))
    assert m.kind == "affine" and m.a == pytest.approx(0.75) and m.b == pytest.approx(0.1)
    assert m(0.2) == pytest.approx(0.25) and m(0.8) == pytest.approx(0.7)
    assert "found" in note and m.describe() == "x*0.750+0.100"


def test_shift_when_only_the_negative_is_found():
    m, note = map_for(ExpectedMarker("CD138", 0.2, 0.8), _modes(0.15))
    assert m.kind == "shift" and m.a == 1.0 and m.b == pytest.approx(-0.05)
    assert "positive not found (no positive cells)" in note
    m2, _ = map_for(ExpectedMarker("CD138", 0.2, None), _modes(0.25, 0.9))
    assert m2.kind == "shift" and m2.b == pytest.approx(0.05)


def test_slope_out_of_range_falls_back_to_the_shift_and_nothing_found_keeps_the_template():
    m, note = map_for(ExpectedMarker("CD3", 0.1, 0.7), _modes(0.1, 0.3))  # slope 0.33
    assert m.kind == "shift" and "slope" in note
    m, note = map_for(ExpectedMarker("CD3", 0.1, 0.7), _modes())
    assert m.identity and m(0.42) == 0.42 and "negative not found" in note


def test_scatter_scale_by_the_main_population():
    m, _ = map_for(ExpectedMarker("FSC-A", main=0.36), _modes(main=0.27))
    assert m.kind == "scale" and m.a == pytest.approx(0.75) and m.b == 0.0
    m, note = map_for(ExpectedMarker("FSC-A", main=0.36), _modes(main=0.1))
    assert m.identity and "outside" in note


def test_ranges_are_clipped_kept_in_order_and_open_ends_stay_open():
    m = WindowMap("shift", 1.0, 0.3)
    assert m.range([0.6, 0.8]) == [0.9, 1.0]
    assert m.range([0.75, 0.95]) == [0.99, 1.0]  # clipped to one point: kept MIN_WIDTH wide
    assert m.range([0.5, None]) == [0.8, None]
    assert WindowMap("shift", 1.0, -0.5).range([None, 0.3]) == [None, 0.0]
    assert WindowMap("shift", 1.0, -0.5).range([0.2, 0.45]) == [0.0, 0.01]


RULES = """
gates:
  TimeOK: {method: time_qc}
  PC:
    CD138.min: {method: valley, window: [0.35, 0.6], given: {CD38: [0.7, null]}}
    CD38.min:
      method: valley
      window: [0.6, 0.8]
      given: {CD138: [0.45, null]}
      fallback: {method: above_negative, window: [0.6, 0.8], given: {CD138: [0.45, null]}}
  CARpos:
    CAR.min: &car
      method: valley
      window: [0.3, 0.4]
      floor: {method: tail, k: 4.0, window: [0.2, 0.33]}
      exclude: [Beads]
  Other:
    CAR.max: *car
"""


def test_every_window_fallback_floor_and_given_on_a_dimension_is_mapped():
    gates = yaml.safe_load(RULES)["gates"]
    before = copy.deepcopy(gates)
    maps = {"CD38": WindowMap("shift", 1.0, -0.1), "CD138": WindowMap("affine", 0.5, 0.2),
            "CAR": WindowMap("scale", 0.5, 0.0)}
    out = map_rules(gates, maps)
    assert gates == before  # the template's document is not touched (YAML aliases share objects)
    assert out["TimeOK"] == {"method": "time_qc"}
    pc = out["PC"]
    assert pc["CD138.min"]["window"] == [0.375, 0.5] and pc["CD138.min"]["given"] == {"CD38": [0.6, None]}
    assert pc["CD38.min"]["window"] == [0.5, 0.7] and pc["CD38.min"]["given"] == {"CD138": [0.425, None]}
    assert pc["CD38.min"]["fallback"] == {"method": "above_negative", "window": [0.5, 0.7],
                                          "given": {"CD138": [0.425, None]}}
    car = out["CARpos"]["CAR.min"]
    assert car["window"] == [0.15, 0.2] and car["floor"]["window"] == [0.1, 0.165] and car["floor"]["k"] == 4.0
    assert car["exclude"] == ["Beads"]  # fields the map does not know are kept
    assert out["Other"]["CAR.max"] == car and out["Other"]["CAR.max"] is not car
    # without a map a dimension stays as written
    assert map_rules(gates, {})["PC"] == before["PC"]


def test_rule_windows_lists_each_window_with_its_place():
    gates = yaml.safe_load(RULES)["gates"]
    got = rule_windows(gates, "CD138")
    assert got == [("PC CD138.min", [0.35, 0.6]), ("PC CD38.min given", [0.45, None]),
                   ("PC CD38.min fallback given", [0.45, None])]
    assert [label for label, _ in rule_windows(gates, "CAR")] == ["CARpos CAR.min", "CARpos CAR.min floor",
                                                                 "Other CAR.max", "Other CAR.max floor"]
