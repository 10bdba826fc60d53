"""The tables of placement methods: a template's ``method:`` names an entry, the loader accepts every
name in the tables (and lists them when a name is unknown), and a method added to a table is used."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.gating import (
    BOUND_METHODS,
    GATE_PLACERS,
    BoundMethod,
    GateRule,
    GatingError,
    combine_boolean,
    gate_tube,
    load_template,
    open_tube,
)
from mrdflow.gating._template import _bound_rule
from mrdflow.panels import load_panels

REPO = Path(__file__).resolve().parents[2]
GATING = REPO / "resources/gating"
TRANSFORMS = {
    "fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
    "scatter": {"type": "linear", "t": 262144},
}
SAMPLE = "PT01_PB_I1_D014"


@pytest.fixture(scope="module")
def cart_tube(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    design = sim.load_design(REPO / "config/test/design.yaml")
    row = next(r for r in sim.read_samples_tsv(REPO / "config/test/samples.tsv") if r["sample_id"] == SAMPLE)
    sim.simulate_file(row, design, out, seed=596)
    return out / row["fcs"]


def _template_dir(tmp_path: Path, rules: str) -> Path:
    """The pb_cart Gating-ML template with ``rules`` as its placement YAML."""
    shutil.copy(GATING / "pb_cart.xml", tmp_path / "pb_cart.xml")
    (tmp_path / "pb_cart.yaml").write_text(rules)
    return tmp_path


def _view(path: Path):
    return open_tube(path, load_panels(REPO / "resources/panels")["pb_cart"], TRANSFORMS).view()


def test_tables_name_the_shipped_methods():
    assert list(BOUND_METHODS) == ["valley", "tail", "gmm", "fmo", "fixed", "populations", "above_negative",
                                   "brightest"]
    assert list(GATE_PLACERS) == ["time_qc", "singlets", "rectangle", "polygon", "boolean"]
    assert [m for m, e in BOUND_METHODS.items() if e.floor] == ["valley", "tail"]
    assert [m for m, e in BOUND_METHODS.items() if not e.data] == ["fixed"]


def test_unknown_methods_list_the_tables(tmp_path):
    with pytest.raises(GatingError, match=r"^x: method must be valley, tail, gmm, fmo, fixed, populations, "
                                          r"above_negative or brightest \(got 'kmeans'\)$"):
        _bound_rule({"method": "kmeans", "window": [0, 1]}, "x")
    with pytest.raises(GatingError, match=r"^x: floor applies to valley and tail bounds only \(method 'gmm'\)$"):
        _bound_rule({"method": "gmm", "window": [0, 1], "floor": {"method": "tail", "window": [0, 1]}}, "x")
    folder = _template_dir(tmp_path, "gates:\n  CD3pos: {method: cluster}\n")
    with pytest.raises(GatingError, match=r"gates\.CD3pos: method must be bounds, time_qc, singlets or fixed "
                                          r"\(got 'cluster'\)$"):
        load_template(folder, "pb_cart")


def test_a_bound_method_added_to_the_table_is_used(cart_tube, tmp_path, monkeypatch):
    def midpoint(ctx):
        lo, hi = ctx.window
        return 0.5 * (lo + hi), f"midpoint of [{lo:.2f}, {hi:.2f}] ({ctx.values.size} {ctx.dim} events)"

    rules = "gates:\n  TimeOK: {method: time_qc}\n  CD3pos:\n    CD3.min: {method: midpoint, window: [0.3, 0.5]}\n"
    folder = _template_dir(tmp_path, rules)
    with pytest.raises(GatingError, match="valley, tail, gmm, fmo, fixed, populations, above_negative or brightest"):
        load_template(folder, "pb_cart")
    monkeypatch.setitem(BOUND_METHODS, "midpoint", BoundMethod(midpoint))
    g = gate_tube(load_template(folder, "pb_cart"), _view(cart_tube))
    step = next(s for s in g.steps if s.gate_id == "CD3pos")
    assert step.bounds["CD3"][0] == pytest.approx(0.4)
    assert step.how["CD3.min"].startswith("midpoint of [0.30, 0.50] (") and step.how["CD3.min"].endswith(" CD3 events)")
    parent = g.mask(step.parent)
    assert g.count("CD3pos") == int((parent & (g.view.values("CD3") >= step.bounds["CD3"][0])).sum())


def test_a_gate_method_added_to_the_table_is_named_by_rules(cart_tube, tmp_path, monkeypatch):
    calls = []

    def as_drawn(placement, gate):
        calls.append(gate.gate_id)
        GATE_PLACERS["rectangle"](placement, replace(gate, rule=GateRule(gate.gate_id, "fixed")))

    folder = _template_dir(tmp_path, "gates:\n  TimeOK: {method: time_qc}\n  CD3pos: {method: as_drawn}\n")
    monkeypatch.setitem(GATE_PLACERS, "as_drawn", as_drawn)
    template = load_template(folder, "pb_cart")
    g = gate_tube(template, _view(cart_tube))
    assert calls == ["CD3pos"]
    drawn = template.strategy.get_gate("CD3pos")
    step = next(s for s in g.steps if s.gate_id == "CD3pos")
    assert step.bounds == {d.id: (d.min, d.max) for d in drawn.dimensions}


def test_combine_boolean_is_gating_ml():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    assert combine_boolean("and", [(a, False), (b, False)]).tolist() == [True, False, False, False]
    assert combine_boolean("or", [(a, False), (b, True)]).tolist() == [True, True, False, True]
    assert combine_boolean("and", [(a, True), (b, True)]).tolist() == [False, False, False, True]
    assert combine_boolean("not", [(a, False)]).tolist() == [False, False, True, True]
    assert combine_boolean("not", [(a, True)]).tolist() == [True, True, False, False]
