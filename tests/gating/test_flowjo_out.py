"""A batch of gated samples written as one FlowJo 10 workspace reads back with the same gates:
mrdflow's workspace import and FlowKit's own both count what the pipeline counted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import shared_dir

REPO = Path(__file__).resolve().parents[2]
TRANSFORMS = {"fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
              "scatter": {"type": "linear", "t": 262144}}
TUBES = ("PT01/PT01_BM_baseline_ngf1.fcs", "PT01/PT01_BM_baseline_ngf2.fcs")  # two panels, own gates


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Two simulated tubes gated from their data and written to one workspace."""
    import mrdflow.demo._simulate as sim
    from mrdflow.gating import FlowJoSample, gate_tube, load_template, open_tube, write_workspace
    from mrdflow.panels import load_panels

    tmp = tmp_path_factory.mktemp("flowjo_out")
    design = sim.load_design(REPO / "config/test/design.yaml")
    panels = load_panels(REPO / "resources/panels")
    rows = [r for r in sim.read_samples_tsv(REPO / "config/test/samples.tsv") if r["fcs"] in TUBES]
    assert len(rows) == len(TUBES)
    gated, written = [], []
    for r in rows:
        sim.simulate_file(r, design, tmp, seed=596)
        tube = open_tube(tmp / r["fcs"], panels[r["panel"]], TRANSFORMS)
        assert tube.compensation is not None  # the test tubes carry $SPILLOVER: compensated gates
        g = gate_tube(load_template(REPO / "resources/gating", r["panel"]), tube.view())
        gated.append((r, panels[r["panel"]], g))
        written.append(FlowJoSample(Path(r["fcs"]).name, str(tmp / r["fcs"]), g.strategy, tube.compensation))
    wsp = write_workspace(tmp / "review" / "batch.wsp", written, group="batch1")
    return wsp, tmp, gated


def _counts(gating) -> dict[str, int]:
    return {row["population"]: row["count"] for row in gating.table()}


def test_mrdflow_import_counts_what_the_pipeline_counted(batch):
    from mrdflow.gating import gate_tube, open_tube, template_from_workspace

    wsp, tmp, gated = batch
    for r, panel, g in gated:
        template = template_from_workspace(wsp, "batch1", r["panel"], tmp / r["fcs"])
        assert template.static
        again = gate_tube(template, open_tube(tmp / r["fcs"], panel, TRANSFORMS).view())
        assert _counts(again) == _counts(g), r["fcs"]
        assert all(c > 0 for c in _counts(g).values())


def test_flowkit_import_counts_what_the_pipeline_counted(batch):
    import flowkit as fk

    wsp, tmp, gated = batch
    ws = fk.Workspace(str(wsp), fcs_samples=[str(tmp / r["fcs"]) for r, _, _ in gated])
    assert sorted(ws.get_sample_ids("batch1")) == sorted(Path(r["fcs"]).name for r, _, _ in gated)
    ws.analyze_samples(group_name="batch1", use_mp=False)
    for r, _, g in gated:
        report = ws.get_gating_results(Path(r["fcs"]).name).report
        flowkit = {name: int(n) for name, n in zip(report["gate_name"], report["count"], strict=True)}
        ours = _counts(g)
        assert set(flowkit) == set(ours), r["fcs"]
        for gate, n in ours.items():
            assert abs(flowkit[gate] - n) <= 1, (r["fcs"], gate, flowkit[gate], n)


def test_workspace_has_flowjo_10_structure(batch):
    wsp, tmp, gated = batch
    root = ET.parse(wsp).getroot()
    assert root.tag == "Workspace" and root.get("flowJoVersion").startswith("10.")
    samples = root.findall("SampleList/Sample")
    assert [s.find("SampleNode").get("name") for s in samples] == [Path(r["fcs"]).name for r, _, _ in gated]
    for s, (r, _, _) in zip(samples, gated, strict=True):
        uri = s.find("DataSet").get("uri")
        assert uri == (tmp / r["fcs"]).resolve().as_uri()
        assert s.find("DataSet").get("sampleID") == s.find("SampleNode").get("sampleID")
        assert s.find("{http://www.isac-net.org/std/Gating-ML/v2.0/transformations}spilloverMatrix") is not None
        fil = [k.get("value") for k in s.iter("Keyword") if k.get("name") == "$FIL"]
        assert len(fil) <= 1
    ids = [g.get("{http://www.isac-net.org/std/Gating-ML/v2.0/gating}id") for g in root.iter("Gate")]
    assert len(ids) == len(set(ids))  # gate ids are unique across samples
    groups = {g.get("name"): [r.get("sampleID") for r in g.iter("SampleRef")] for g in root.iter("GroupNode")}
    assert groups == {"All Samples": ["1", "2"], "batch1": ["1", "2"]}


def test_workspace_matches_real_flowjo_workspaces(batch):
    """The elements (and their nesting) FlowJo 10 itself writes are the ones we write."""
    shared = shared_dir()
    real = sorted(shared.glob("realdata/*/*.wsp")) + sorted(shared.glob("flowjo/*.wsp")) if shared else []
    if not real:
        pytest.skip("no FlowJo workspaces in ../shared")
    wsp, _, _ = batch

    def shape(path):
        root = ET.parse(path).getroot()
        return {
            "root": (root.tag, root.get("version")),
            "children": {c.tag for c in root} >= {"Groups", "SampleList"},
            "sample": {c.tag for c in root.find("SampleList/Sample")} >= {"DataSet", "Keywords", "SampleNode",
                                                                          "Transformations"},
            "group": root.find("Groups/GroupNode/Group/SampleRefs/SampleRef") is not None,
            "gate": root.find("SampleList/Sample/SampleNode/Subpopulations/Population/Gate") is not None,
        }

    ours = shape(wsp)
    for path in real:
        assert shape(path) == ours, path


def test_refuses_duplicate_names_and_boolean_gates(tmp_path, batch):
    import flowkit as fk

    from mrdflow.gating import FlowJoSample, GatingError, write_workspace

    wsp, tmp, gated = batch
    r, _, g = gated[0]
    one = FlowJoSample("a.fcs", str(tmp / r["fcs"]), g.strategy, None)
    with pytest.raises(GatingError, match="unique"):
        write_workspace(tmp_path / "x.wsp", [one, one])
    with pytest.raises(GatingError, match="no samples"):
        write_workspace(tmp_path / "x.wsp", [])
    strategy = fk.parse_gating_xml(str(REPO / "resources/gating/pb_nk.xml"))
    with pytest.raises(GatingError, match="BooleanGate"):
        write_workspace(tmp_path / "x.wsp", [FlowJoSample("b.fcs", str(tmp / r["fcs"]), strategy, None)])
    assert not (tmp_path / "x.wsp").exists()
