"""open_tube: one way to open a tube (header, panel, compensation), shared by in-memory and streamed
gating; its errors name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.errors import MrdflowError
from mrdflow.gating import (
    CompensationError,
    OpenTube,
    TubeView,
    compensation_for,
    gate_tube,
    gate_tube_streamed,
    load_template,
    open_tube,
)
from mrdflow.io import read_fcs
from mrdflow.panels import PanelError, load_panels, resolve_panel

REPO = Path(__file__).resolve().parents[2]
TINY_DESIGN = REPO / "config/test/design.yaml"
TINY_SAMPLES = REPO / "config/test/samples.tsv"
PANELS = load_panels(REPO / "resources/panels")
GATING = REPO / "resources/gating"
TRANSFORMS = {
    "fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
    "scatter": {"type": "linear", "t": 262144},
}
SAMPLE = "PT01_PB_baseline_nk"


@pytest.fixture(scope="module")
def nk_tubes(tmp_path_factory) -> dict[str, Path]:
    """PT01's PB NK tubes (stained and FMO, CD159a unstained): {tube: path}."""
    out = tmp_path_factory.mktemp("sim")
    design = sim.load_design(TINY_DESIGN)
    rows = [r for r in sim.read_samples_tsv(TINY_SAMPLES) if r["sample_id"] == SAMPLE]
    for r in rows:
        sim.simulate_file(r, design, out, seed=596)
    return {r["tube"]: out / r["fcs"] for r in rows}


def _by_hand(path: Path, unstained=()) -> TubeView:
    """What every caller wrote out before open_tube: read, resolve, compensate, view."""
    data = read_fcs(path)
    resolved = resolve_panel(PANELS["pb_nk"], data.pnn, data.pns, unstained=unstained, file=str(path))
    comp = compensation_for("fcs", data.metadata, file=str(path))
    return TubeView(data, resolved, comp, TRANSFORMS, name=str(path))


def test_open_tube_reads_no_events_and_views_them_on_demand(nk_tubes):
    tube = open_tube(nk_tubes["nk"], PANELS["pb_nk"], TRANSFORMS)
    assert isinstance(tube, OpenTube)
    assert tube.name == str(nk_tubes["nk"]) and tube.n_events == tube.header.n_events > 0
    assert tube.compensation is not None and set(tube.compensation.detectors) <= set(tube.header.pnn)
    view = tube.view()
    assert view.n == tube.n_events and view.name == tube.name
    assert view.resolved.index == tube.resolved.index
    assert np.array_equal(view.raw, _by_hand(nk_tubes["nk"]).raw)


def test_open_tube_gates_as_the_hand_written_path(nk_tubes):
    template = load_template(GATING, "pb_nk")
    fmo_hand = gate_tube(template, _by_hand(nk_tubes["nk_fmo"], {"CD159a"}))
    fmo = gate_tube(template, open_tube(nk_tubes["nk_fmo"], PANELS["pb_nk"], TRANSFORMS,
                                        unstained={"CD159a"}).view())
    hand = gate_tube(template, _by_hand(nk_tubes["nk"]), fmo=fmo_hand)
    opened = gate_tube(template, open_tube(nk_tubes["nk"], PANELS["pb_nk"], TRANSFORMS).view(), fmo=fmo)
    assert opened.table() == hand.table()
    assert [(s.gate_id, s.bounds, s.how) for s in opened.steps] == [(s.gate_id, s.bounds, s.how) for s in hand.steps]
    assert opened.gatingml() == hand.gatingml()


def test_streamed_gating_takes_an_open_tube(nk_tubes):
    template = load_template(GATING, "pb_nk")
    path = nk_tubes["nk"]
    tube = open_tube(path, PANELS["pb_nk"], TRANSFORMS, name="nk.fcs")
    kw = dict(placement_events=5000, chunk_events=3001, keep={"NK": ("NKG2Apos",)})
    a = gate_tube_streamed(template, tube, **kw)
    b = gate_tube_streamed(template, path, tube.resolved, tube.compensation, TRANSFORMS, name="nk.fcs", **kw)
    assert a.table() == b.table() and a.qc == b.qc and a.view.name == b.view.name == "nk.fcs"
    assert np.array_equal(a.events_in("NK", ("NKG2Apos",)).values, b.events_in("NK", ("NKG2Apos",)).values)
    with pytest.raises(TypeError, match="resolved panel and transforms"):
        gate_tube_streamed(template, path)


def test_open_tube_errors_name_the_file(nk_tubes, tmp_path):
    path = nk_tubes["nk"]
    n = open_tube(path, PANELS["pb_nk"], TRANSFORMS).n_events
    with pytest.raises(MrdflowError, match=rf"^x\.fcs: only {n} events \(minimum {n + 1}\)$"):
        open_tube(path, PANELS["pb_nk"], TRANSFORMS, name="x.fcs", min_events=n + 1)
    with pytest.raises(PanelError, match="x.fcs"):
        open_tube(path, PANELS["ngf_tube1"], TRANSFORMS, name="x.fcs")
    # a matrix file naming a detector the file lacks
    matrix = tmp_path / "spill.csv"
    matrix.write_text("BUV999-A,FITC-A\n1,0.01\n0.02,1\n")
    with pytest.raises(CompensationError, match=r"x\.fcs: the spillover matrix names channel\(s\) \['BUV999-A'\] "
                                                r"that the file lacks"):
        open_tube(path, PANELS["pb_nk"], TRANSFORMS, name="x.fcs", compensation=str(matrix))
    with pytest.raises(CompensationError, match="x.fcs"):
        open_tube(path, PANELS["pb_nk"], TRANSFORMS, name="x.fcs", compensation="missing.csv", workdir=tmp_path)
