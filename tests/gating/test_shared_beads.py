"""Counting beads read on other markers' channels (a panel's ``shares:``): the Beads dimension is the
per-event minimum of the shared markers' gate-unit values, the bead gate is placed by ``brightest``
(the valley below the brightest population), written in Gating-ML on the shared channels (FlowKit
re-applies it), counted in memory and streamed; a panel with its own bead channel keeps its gate."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import mrdflow.demo._simulate as sim
from mrdflow.gating import BoundRule, GatingError, gate_tube, gate_tube_streamed, load_template, open_tube
from mrdflow.gating._bounds import _selection, place_bound
from mrdflow.gating._template import _bound_rule
from mrdflow.panels import load_panel

REPO = Path(__file__).resolve().parents[2]
GATING = REPO / "resources/gating"
PANEL = REPO / "resources/panels/pb_cart.yaml"
TRANSFORMS = {
    "fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
    "scatter": {"type": "linear", "t": 262144},
}
SAMPLE = "PT01_PB_I1_D014"  # CAR-T expansion: CD8 T cells and CD8+ CAR-T cells bright on CD8
CD8_CELLS = ("t_cd8", "cart_cd8")
# The bead rules as they were before ``brightest``: a valley in a fixed window, and the beads
# taken out of the FSC density by a fixed Beads level.
OLD_RULES = """gates:
  TimeOK: {method: time_qc}
  Beads:
    Beads.min: &beads {method: valley, window: [0.45, 0.85]}
  Singlets: {method: singlets}
  Cells:
    FSC-A.min: {method: valley, window: [0.06, 0.16], given: {Beads: [null, 0.45]}}
    Beads.max: *beads
"""


@pytest.fixture(scope="module")
def tubes(tmp_path_factory):
    """The same CAR-T tube with a bead channel of its own and without one (beads bright on every
    channel), and the planted labels of the latter."""
    out = tmp_path_factory.mktemp("beads")
    design = sim.load_design(REPO / "config/test/design.yaml")
    row = next(r for r in sim.read_samples_tsv(REPO / "config/test/samples.tsv") if r["sample_id"] == SAMPLE)
    shared = {**design, "cart_tube": {**design["cart_tube"], "bead_channel": "none"}}
    sim.simulate_file(row, design, out / "own", seed=596)
    truth = sim.simulate_file(row, shared, out / "none", seed=596)
    return SimpleNamespace(own=out / "own" / row["fcs"], none=out / "none" / row["fcs"], truth=truth,
                           folder=out)


def _panel(folder: Path, shares: list[str] | None):
    """pb_cart with its Beads read on ``shares`` (None: the panel as shipped, own channel)."""
    text = PANEL.read_text()
    if shares is not None:
        text = re.sub(r"^  Beads: .*$", f"  Beads: {{aliases: [Beads, CountBright], shares: [{', '.join(shares)}]}}",
                      text, flags=re.M)
    path = folder / f"pb_cart_{'_'.join(shares or ['own'])}.yaml"
    path.write_text(text)
    return load_panel(path)


def _labels(fcs: Path) -> tuple[np.ndarray, list[str]]:
    z = np.load(str(fcs).replace(".fcs", ".labels.npz"))
    return z["labels"], [str(n) for n in z["names"]]


def _of(labels, names, *pops) -> np.ndarray:
    return np.isin(labels, [names.index(p) for p in pops])


@pytest.mark.parametrize("shares", [["CD8"], ["CD4", "CD8"]])
def test_beads_on_shared_channels_are_counted_and_no_cd8_cell_is_a_bead(tubes, shares):
    tube = open_tube(tubes.none, _panel(tubes.folder, shares), TRANSFORMS)
    assert "APC-A" not in tube.header.pnn and tube.resolved.shared == {"Beads": tuple(shares)}
    g = gate_tube(load_template(GATING, "pb_cart"), tube.view())
    labels, names = _labels(tubes.none)
    bead = _of(labels, names, "bead")
    beads_in_time = int((bead & g.mask("TimeOK")).sum())
    assert abs(g.count("Beads") - beads_in_time) <= 3
    assert not (g.mask("Beads") & _of(labels, names, *CD8_CELLS)).any()
    assert int((g.mask("Beads") & ~bead).sum()) <= 3
    step = next(s for s in g.steps if s.gate_id == "Beads")
    ev = step.evidence["Beads.min"]
    assert ev.method == "brightest" and ev.sure, ev
    assert "scatter CV FSC-A" in step.how["Beads.min"] and "minimum of" in step.how[""]
    # Cells leaves out the beads, not the CD8+ cells (Beads.max on the same events; FSC-A density
    # without the Beads gate's events)
    assert not (g.mask("Cells") & bead).any()
    cd8 = _of(labels, names, *CD8_CELLS) & g.mask("Singlets")
    assert int((cd8 & g.mask("Cells")).sum()) >= 0.97 * int(cd8.sum())
    np.testing.assert_array_equal(g.view.values("Beads"),
                                  np.minimum.reduce([g.view.values(s) for s in shares]))


def test_shared_bead_gates_reapply_with_flowkit(tubes):
    """gates.xml names only the file's channels: min(CD4, CD8) >= t is a RectangleGate on CD4 and
    CD8 (same threshold), Cells is NOT (both >= its max) AND its FSC-A range; FlowKit gets every
    count the engine got."""
    import flowkit as fk

    tube = open_tube(tubes.none, _panel(tubes.folder, ["CD4", "CD8"]), TRANSFORMS)
    g = gate_tube(load_template(GATING, "pb_cart"), tube.view())
    xml = tubes.folder / "gates.xml"
    xml.write_bytes(g.gatingml())
    strategy = fk.parse_gating_xml(str(xml))
    beads = strategy.get_gate("Beads")
    assert isinstance(beads, fk.gates.RectangleGate)
    assert [d.id for d in beads.dimensions] == ["PE-Cy7-A", "APC-H7-A"]
    assert beads.dimensions[0].min == beads.dimensions[1].min
    cells = strategy.get_gate("Cells")
    assert isinstance(cells, fk.gates.BooleanGate) and cells.type == "and"
    assert {(r["ref"], r["complement"]) for r in cells.gate_refs} == {("Cells_FSC-A", False),
                                                                     ("Cells_Beads_high", True)}
    report = strategy.gate_sample(fk.Sample(str(tubes.none), ignore_offset_error=True)).report
    counts = {s.gate_id: s.count for s in g.steps}
    assert set(report["gate_name"]) == set(counts)
    for _, row in report.iterrows():
        assert counts[row["gate_name"]] == row["count"], row["gate_name"]


def test_streamed_equals_in_memory_and_a_sample_places_the_same_beads(tubes):
    panel = _panel(tubes.folder, ["CD4", "CD8"])
    template = load_template(GATING, "pb_cart")
    tube = open_tube(tubes.none, panel, TRANSFORMS)
    whole = gate_tube(template, tube.view())
    streamed = gate_tube_streamed(template, tube, placement_events=tube.n_events, chunk_events=3000)
    assert {s.gate_id: s.count for s in streamed.steps} == {s.gate_id: s.count for s in whole.steps}
    half = gate_tube_streamed(template, tube, placement_events=tube.n_events // 2, chunk_events=3000)
    assert abs(half.count("Beads") - whole.count("Beads")) <= 3
    assert abs(half.count("CARpos") - whole.count("CARpos")) <= 0.02 * whole.count("CARpos") + 3


def test_own_bead_channel_gives_the_same_bead_gate_as_before(tubes, tmp_path):
    """A panel with its own bead channel: brightest places the gate the window valley placed
    (the same beads), and Cells excluding the Beads gate's events keeps the same cells."""
    import shutil

    shutil.copy(GATING / "pb_cart.xml", tmp_path / "pb_cart.xml")
    rules = (GATING / "pb_cart.yaml").read_text()
    old = re.sub(r"gates:\n(.*\n)*?  # Live cells", OLD_RULES + "  # Live cells", rules)
    assert "brightest" not in old and "exclude" not in old
    (tmp_path / "pb_cart.yaml").write_text(old)
    view = open_tube(tubes.own, _panel(tubes.folder, None), TRANSFORMS).view()
    before = gate_tube(load_template(tmp_path, "pb_cart"), view)
    after = gate_tube(load_template(GATING, "pb_cart"), view)
    np.testing.assert_array_equal(after.mask("Beads"), before.mask("Beads"))
    assert after.steps[[s.gate_id for s in after.steps].index("Beads")].evidence["Beads.min"].sure
    for gid in ("Cells", "Lymphocytes", "CD3pos", "CARpos"):
        assert abs(after.count(gid) - before.count(gid)) <= 3, gid


# ---- the bound method on its own (no FCS) ---------------------------------------------------

class _View:
    def __init__(self, cols):
        self.cols = {k: np.asarray(v, np.float32) for k, v in cols.items()}
        self.n = len(next(iter(cols.values())))
        self.resolved = SimpleNamespace(index={k: i for i, k in enumerate(cols)})

    def values(self, dim):
        return self.cols[dim]


def _events(rng, parts):
    """Columns Beads, FSC-A, SSC-A of populations ``(n, axis mean, axis sd, fsc, ssc cv)``."""
    cols = {"Beads": [], "FSC-A": [], "SSC-A": []}
    for n, mu, sd, fsc, cv in parts:
        cols["Beads"].append(rng.normal(mu, sd, n))
        cols["FSC-A"].append(fsc * (1 + rng.normal(0, cv, n)))
        cols["SSC-A"].append(0.1 * (1 + rng.normal(0, cv, n)))
    return {k: np.concatenate(v) for k, v in cols.items()}


def _brightest(cols, side="min", window=(0.45, 0.85)):
    view = _View(cols)
    p = SimpleNamespace(view=view, masks={}, template=SimpleNamespace(source="test"))
    rule = BoundRule("brightest", window=window)
    return place_bound(p, "Beads", "Beads", side, rule, np.ones(view.n, bool), {"Beads": (None, None)})


def test_brightest_cuts_below_the_beads_not_below_the_stained_cells():
    rng = np.random.default_rng(7)
    # negatives, CD8+ cells (bright, wide in scatter), beads (brightest, tight), a few
    # double-stained cells in the gap (no population of their own)
    cols = _events(rng, [(6000, 0.15, 0.06, 0.2, 0.15), (2000, 0.74, 0.04, 0.2, 0.15),
                         (1500, 0.93, 0.006, 0.11, 0.04), (12, 0.68, 0.02, 0.2, 0.15)])
    for side in ("min", "max"):
        placed = _brightest(cols, side)
        ev = placed.evidence
        beads, cells = cols["Beads"][8000:9500], np.concatenate([cols["Beads"][:8000], cols["Beads"][9500:]])
        assert (beads >= placed.value).all() and (cells < placed.value).all(), placed
        assert ev.method == "brightest" and ev.sure and ev.valley_depth >= 0.5, ev
        assert "FSC-A 4." in placed.note or "FSC-A 3." in placed.note, placed.note


def test_brightest_is_unsure_without_tight_beads():
    rng = np.random.default_rng(8)
    cells_only = _events(rng, [(6000, 0.15, 0.06, 0.2, 0.15), (2000, 0.74, 0.04, 0.2, 0.15)])
    placed = _brightest(cells_only)
    assert not placed.evidence.sure and "not tight in scatter" in placed.evidence.reason
    negatives = _events(rng, [(6000, 0.15, 0.06, 0.2, 0.15)])
    placed = _brightest(negatives)
    assert not placed.evidence.sure and "no population brighter" in placed.evidence.reason
    assert 0.45 <= placed.value <= 0.85  # the window's density minimum stands


# ---- exclude: a gate's events out of a bound's density ----------------------------------------

def test_exclude_takes_a_gates_events_out_and_is_checked():
    assert _bound_rule({"method": "valley", "window": [0.1, 0.2], "exclude": ["Beads"]}, "x").exclude == ("Beads",)
    with pytest.raises(GatingError, match="exclude must be a list of gate ids"):
        _bound_rule({"method": "valley", "window": [0.1, 0.2], "exclude": "Beads"}, "x")
    beads = np.array([True, False, True, False])
    p = SimpleNamespace(masks={"Beads": beads}, view=_View({"FSC-A": np.arange(4.0)}))
    rule = BoundRule("valley", window=(0.1, 0.2), exclude=("Beads",))
    assert _selection(p, rule, np.ones(4, bool)).tolist() == [False, True, False, True]


def test_exclude_naming_no_gate_is_refused(tmp_path):
    import shutil

    shutil.copy(GATING / "pb_cart.xml", tmp_path / "pb_cart.xml")
    (tmp_path / "pb_cart.yaml").write_text(
        "gates:\n  Cells:\n    FSC-A.min: {method: valley, window: [0.06, 0.16], exclude: [Bead]}\n")
    with pytest.raises(GatingError, match=r"gates\.Cells: population/exclude name\(s\) \['Bead'\] not gates"):
        load_template(tmp_path, "pb_cart")


def test_a_shared_marker_has_no_channel_to_name(tubes):
    view = open_tube(tubes.none, _panel(tubes.folder, ["CD4", "CD8"]), TRANSFORMS).view()
    with pytest.raises(GatingError, match=r"'Beads' has no channel of its own .*\['CD4', 'CD8'\]"):
        view.pnn("Beads")
    assert view.shares("Beads") == ("CD4", "CD8") and view.shares("CD8") == ()
    assert view.kind("Beads") == "fluorescence"
