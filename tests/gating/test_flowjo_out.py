"""A batch of gated samples written as one FlowJo 10 workspace reads back with the same gates:
mrdflow's workspace import and FlowKit's own both count what the pipeline counted, boolean gates
(FlowJo's AND/OR/NOT nodes, with helper NOT nodes for complemented operands) and their children
included; and the XML is shaped as FlowJo 10 writes it (compared with real FlowJo workspaces)."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dir

from mrdflow.gating._flowjo_out import HELPER_SUFFIX

REPO = Path(__file__).resolve().parents[2]
TRANSFORMS = {"fluorescence": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0.0},
              "scatter": {"type": "linear", "t": 262144}}
TUBES = ("PT01/PT01_BM_baseline_ngf1.fcs", "PT01/PT01_BM_baseline_ngf2.fcs")  # two panels, own gates
PROFILE2 = REPO / "config/test_profile2"  # the second lab: 2^20 scale, CAR-T beads on CD4/CD8 (shares)
TRANSFORMS2 = {"fluorescence": {"type": "logicle", "t": 1048576, "w": 0.5, "m": 4.5, "a": 0.0},
               "scatter": {"type": "linear", "t": 1048576}}
G = "{http://www.isac-net.org/std/Gating-ML/v2.0/gating}"
NK_PARENT = ("root", "TimeOK", "Singlets", "Cells", "Viable", "CD45pos", "Lymphocytes", "CD3neg_Dumpneg")


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


# ---- boolean gates -------------------------------------------------------------------------------

def _thin(src: Path, dst: Path, windows, keep: float = 0.15, seed: int = 5) -> None:
    """``src`` with most events of each Time window (fractions of the run) dropped: flow-rate
    anomalies the time QC flags, one bad segment per window. ``$FIL`` names ``dst``."""
    from mrdflow.io import read_fcs, write_fcs

    d = read_fcs(src)
    values = d.channel_values
    t = values[:, d.channel_index("Time")]
    lo, hi = float(t.min()), float(t.max())
    rng = np.random.default_rng(seed)
    drop = np.zeros(len(t), bool)
    for a, b in windows:
        drop |= (t >= lo + a * (hi - lo)) & (t < lo + b * (hi - lo)) & (rng.random(len(t)) >= keep)
    owned = {"$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT"}  # the writer's own keywords
    meta = {k: v for k, v in d.metadata.items() if k not in owned and not k.startswith(("$BEGIN", "$END"))}
    meta["$FIL"] = dst.name
    write_fcs(dst, values[~drop], d.pnn, d.pns, metadata=meta,
              pnr=[float(d.metadata[f"$P{i}R"]) for i in range(1, len(d.pnn) + 1)])


@pytest.fixture(scope="module")
def booleans(tmp_path_factory):
    """Three tubes whose pipeline gates hold boolean gates, written to one workspace:
    an NK tube with a clog (TimeOK = NOT TimeOK_bad1; NK = CD56pos OR CD16pos, with children),
    the NK tube with two flow-rate gaps (TimeOK = AND of complemented TimeOK_bad1, TimeOK_bad2) and
    the second lab's CAR-T tube, beads read on CD4/CD8 (Cells = Cells_FSC-A AND NOT
    Cells_Beads_high, with children). Returns the workspace, the folder and per tube
    (path, panel, transforms, gating)."""
    import mrdflow.demo._simulate as sim
    from mrdflow.gating import FlowJoSample, gate_tube, load_template, open_tube, write_workspace
    from mrdflow.panels import load_panels

    tmp = tmp_path_factory.mktemp("flowjo_bool")
    design = sim.load_design(REPO / "config/test/design.yaml")
    nk = next(r for r in sim.read_samples_tsv(REPO / "config/test/samples.tsv")
              if r["fcs"] == "PT01/PT01_PB_baseline_nk.fcs")
    sim.simulate_file(nk, {**design, "clog_files": {"PT01_PB_baseline_nk": {"start": 0.45, "length": 0.12}}},
                      tmp, seed=596)
    sim.simulate_file(nk, {**design, "clog_files": {}}, tmp / "clean", seed=596)
    gaps = tmp / "PT01/PT01_PB_baseline_nk_2gaps.fcs"
    _thin(tmp / "clean" / nk["fcs"], gaps, [(0.2, 0.3), (0.65, 0.75)])
    design2 = sim.load_design(PROFILE2 / "design.yaml")
    cart = next(r for r in sim.read_samples_tsv(PROFILE2 / "samples.tsv") if r["sample_id"] == "PT01_PB_I1_D014")
    sim.simulate_file(cart, design2, tmp / "lab2", seed=596)
    panels, panels2 = load_panels(REPO / "resources/panels"), load_panels(PROFILE2 / "panels")
    tubes = [(tmp / nk["fcs"], panels["pb_nk"], TRANSFORMS), (gaps, panels["pb_nk"], TRANSFORMS),
             (tmp / "lab2" / cart["fcs"], panels2["pb_cart"], TRANSFORMS2)]
    gated, written = [], []
    for fcs, panel, transforms in tubes:
        tube = open_tube(fcs, panel, transforms)
        g = gate_tube(load_template(REPO / "resources/gating", panel.name), tube.view())
        gated.append((fcs, panel, transforms, g))
        written.append(FlowJoSample(fcs.name, str(fcs), g.strategy, tube.compensation))
    wsp = write_workspace(tmp / "review" / "booleans.wsp", written, group="booleans")
    return wsp, tmp, gated


def _kinds(g) -> dict[str, str]:
    """Boolean gates of a gating: gate id -> and/or/not, and which operands are complemented."""
    out = {}
    for gid, path in g.strategy.get_gate_ids():
        gate = g.strategy.get_gate(gid, gate_path=path)
        if gate.gate_type == "BooleanGate":  # mrdflow's placed gates, or FlowKit's
            out[gid] = gate.type + "".join(" ~" + r["ref"] if r["complement"] else " " + r["ref"]
                                           for r in gate.gate_refs)
    return out


def test_boolean_tubes_hold_the_boolean_gates_the_pipeline_makes(booleans):
    _, _, gated = booleans
    kinds = [_kinds(g) for *_, g in gated]
    assert kinds[0] == {"TimeOK": "not TimeOK_bad1", "NK": "or CD56pos CD16pos"}
    assert kinds[1] == {"TimeOK": "and ~TimeOK_bad1 ~TimeOK_bad2", "NK": "or CD56pos CD16pos"}
    assert kinds[2] == {"Cells": "and Cells_FSC-A ~Cells_Beads_high"}
    for *_, g in gated:
        assert all(c > 0 for c in _counts(g).values())


def _without_helpers(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if not k.endswith(HELPER_SUFFIX)}


def test_boolean_gates_read_back_in_mrdflow_with_the_pipeline_counts(booleans):
    from mrdflow.gating import gate_tube, open_tube, template_from_workspace

    wsp, _, gated = booleans
    for fcs, panel, transforms, g in gated:
        template = template_from_workspace(wsp, "booleans", panel.name, fcs)
        again = gate_tube(template, open_tube(fcs, panel, transforms).view())
        back = _counts(again)
        assert _without_helpers(back) == _counts(g), fcs.name
        _helper_counts_ok(again, g)


def _helper_counts_ok(again, g) -> None:
    """Each helper ``NOT X (mrdflow helper)`` holds its parent's events outside X (X's parent in
    these tubes), and there is one per complemented operand."""
    helpers = [s for s in again.steps if s.gate_id.endswith(HELPER_SUFFIX)]
    complemented = {r["ref"] for gid in _kinds(g) for r in g.strategy.get_gate(gid).gate_refs if r["complement"]}
    assert {s.gate_id for s in helpers} == {f"NOT {ref}{HELPER_SUFFIX}" for ref in complemented}
    for s in helpers:
        operand = s.gate_id[len("NOT "):-len(HELPER_SUFFIX)]
        within = g.count(s.parent) if s.parent else g.n_events
        assert again.count(s.gate_id) == within - g.count(operand), s.gate_id


def test_boolean_gates_read_back_in_flowkit_with_the_pipeline_counts(booleans):
    import flowkit as fk

    wsp, _, gated = booleans
    ws = fk.Workspace(str(wsp), fcs_samples=[str(fcs) for fcs, *_ in gated])
    assert sorted(ws.get_sample_ids("booleans")) == sorted(fcs.name for fcs, *_ in gated)
    ws.analyze_samples(group_name="booleans", use_mp=False)
    for fcs, _, _, g in gated:
        report = ws.get_gating_results(fcs.name).report
        flowkit = {name: int(n) for name, n in zip(report["gate_name"], report["count"], strict=True)}
        assert _without_helpers(flowkit) == _counts(g), fcs.name
        strategy = ws.get_gating_strategy(fcs.name)
        for gid in _kinds(g):  # booleans read back as booleans, none complemented
            gate = strategy.get_gate(gid)
            assert isinstance(gate, fk.gates.BooleanGate)
            assert not any(r["complement"] for r in gate.gate_refs)


def test_boolean_gates_from_gatingml_read_back_the_same(booleans, tmp_path):
    """The review export writes the strategies it reads back from each tube's gates.xml (FlowKit's
    Gating-ML parser): their boolean gates, complements included, read back as well."""
    import flowkit as fk

    from mrdflow.gating import FlowJoSample, gate_tube, open_tube, template_from_workspace, write_workspace

    _, _, gated = booleans
    written = []
    for fcs, panel, transforms, g in gated:
        xml = tmp_path / f"{fcs.stem}.xml"
        xml.write_bytes(g.gatingml())
        written.append(FlowJoSample(fcs.name, str(fcs), fk.parse_gating_xml(str(xml)),
                                    open_tube(fcs, panel, transforms).compensation))
    wsp = write_workspace(tmp_path / "from_gatingml.wsp", written, group="gml")
    for fcs, panel, transforms, g in gated:
        template = template_from_workspace(wsp, "gml", panel.name, fcs)
        again = gate_tube(template, open_tube(fcs, panel, transforms).view())
        assert _without_helpers(_counts(again)) == _counts(g), fcs.name


def _node(sample: ET.Element, *path: str) -> ET.Element:
    """The population, AND, OR or NOT node at ``path`` under the sample's root."""
    el = sample.find("SampleNode")
    for name in path:
        el = next(c for c in el.find("Subpopulations") if c.get("name") == name)
    return el


def _dependents(el: ET.Element) -> list[str]:
    return [d.get("name") for d in el.findall("Dependents/Dependent")]


def test_boolean_gates_are_flowjo_boolean_nodes(booleans):
    wsp, _, gated = booleans
    root = ET.parse(wsp).getroot()
    clog, gaps, cart = root.findall("SampleList/Sample")
    # NOT of one rectangle: a NotNode holding a copy of the negated gate, its children inside
    time_ok = _node(clog, "TimeOK")
    assert time_ok.tag == "NotNode" and _dependents(time_ok) == ["TimeOK_bad1"]
    assert [c.tag for c in time_ok] == ["Gate", "Subpopulations", "Dependents"]
    bad = _node(clog, "TimeOK_bad1").find("Gate")
    assert ET.tostring(time_ok.find("Gate")[0][0]) == ET.tostring(bad[0][0])  # the same Time range
    assert time_ok.find("Gate").get(f"{G}id") != bad.get(f"{G}id")
    assert _node(clog, "TimeOK", "Singlets").find("Gate").get(f"{G}parent_id") == time_ok.find("Gate").get(f"{G}id")
    # OR of two sibling rectangles, children nested under it (no gate of its own to name)
    nk_path = ("TimeOK", "Singlets", "Cells", "Viable", "CD45pos", "Lymphocytes", "CD3neg_Dumpneg")
    nk = _node(clog, *nk_path, "NK")
    assert nk.tag == "OrNode" and nk.find("Gate") is None
    assert _dependents(nk) == ["/".join((*nk_path, "CD56pos")), "/".join((*nk_path, "CD16pos"))]
    assert {c.get("name") for c in nk.find("Subpopulations")} == {"NK_bright", "NK_dim", "NKG2Apos"}
    assert _node(clog, *nk_path, "NK", "NK_bright").find("Gate").get(f"{G}parent_id") is None
    assert _node(clog, *nk_path, "NK", "NK_bright", "NKG2Apos_bright").tag == "Population"
    # AND of complemented segments: AND of helper NOT nodes, one per segment, beside it
    time_ok = _node(gaps, "TimeOK")
    helpers = [f"NOT TimeOK_bad{i}{HELPER_SUFFIX}" for i in (1, 2)]
    assert time_ok.tag == "AndNode" and _dependents(time_ok) == helpers
    for i, name in enumerate(helpers, start=1):
        helper = _node(gaps, name)
        assert helper.tag == "NotNode" and _dependents(helper) == [f"TimeOK_bad{i}"]
        assert helper.find("Gate") is not None and helper.find("Subpopulations") is None
    assert _node(gaps, "TimeOK", "Singlets").tag == "Population"
    # the shared-bead Cells: Cells_FSC-A AND (NOT Cells_Beads_high), children inside
    cells = _node(cart, "TimeOK", "Singlets", "Cells")
    assert cells.tag == "AndNode"
    assert _dependents(cells) == ["TimeOK/Singlets/Cells_FSC-A", f"TimeOK/Singlets/NOT Cells_Beads_high{HELPER_SUFFIX}"]
    assert _node(cart, "TimeOK", "Singlets", f"NOT Cells_Beads_high{HELPER_SUFFIX}").tag == "NotNode"
    assert _node(cart, "TimeOK", "Singlets", "Cells", "Viable", "CD45pos").tag == "Population"
    # gate ids: unique across the workspace, every parent id names a gate
    ids = [g.get(f"{G}id") for g in root.iter("Gate")]
    assert len(ids) == len(set(ids))
    parents = {el.get(f"{G}parent_id") for el in root.iter() if el.get(f"{G}parent_id")}
    assert parents <= set(ids)
    # every node carries the attributes of a FlowJo population node
    for el in root.iter():
        if el.tag in ("AndNode", "OrNode", "NotNode"):
            assert {"name", "annotation", "owningGroup", "expanded", "sortPriority"} <= set(el.attrib), el.attrib


def test_every_boolean_construction_reads_back_exactly(booleans, tmp_path):
    """Constructions the pipeline does not make today, by hand on the NK tube's gates: an OR with a
    complemented operand, two gates sharing one complemented operand (one helper), an AND of one
    complemented gate (a plain NOT), a NOT of a boolean (no gate to copy) and a child under a
    boolean made of helpers. mrdflow applying the strategy as drawn is the reference."""
    import flowkit as fk

    from mrdflow.gating import FlowJoSample, gate_tube, open_tube, template_from_workspace, write_workspace
    from mrdflow.gating._template import GatingTemplate

    _, _, gated = booleans
    fcs, panel, transforms, g = gated[0]
    s = copy.deepcopy(g.strategy)

    def ref(name, complement=False, path=NK_PARENT):
        return {"ref": name, "path": path, "complement": complement}

    s.add_gate(fk.gates.BooleanGate("CD56_or_not16", "or", [ref("CD56pos"), ref("CD16pos", True)]), NK_PARENT)
    s.add_gate(fk.gates.BooleanGate("CD56_not16", "and", [ref("CD56pos"), ref("CD16pos", True)]), NK_PARENT)
    s.add_gate(fk.gates.BooleanGate("not16", "and", [ref("CD16pos", True)]), NK_PARENT)
    s.add_gate(fk.gates.BooleanGate("not_NK", "not", [ref("NK")]), NK_PARENT)
    child = copy.deepcopy(g.strategy.get_gate("NKG2Apos"))
    child.gate_name = "NKG2Apos_CD56_not16"
    s.add_gate(child, (*NK_PARENT, "CD56_not16"))
    tube = open_tube(fcs, panel, transforms)
    want = _counts(gate_tube(GatingTemplate(panel.name, s, {}, "by hand", static=True), tube.view()))
    assert want["CD56_not16"] > 0 and want["NKG2Apos_CD56_not16"] > 0 and want["not_NK"] > 0

    wsp = write_workspace(tmp_path / "hand.wsp", [FlowJoSample(fcs.name, str(fcs), s, tube.compensation)],
                          group="hand")
    root = ET.parse(wsp).getroot()
    sample = root.find("SampleList/Sample")
    nk_path = NK_PARENT[1:]
    names = [c.get("name") for c in _node(sample, *nk_path).find("Subpopulations")]
    assert names.count(f"NOT CD16pos{HELPER_SUFFIX}") == 1  # shared by the OR and the AND
    assert _node(sample, *nk_path, "not16").tag == "NotNode"
    assert _dependents(_node(sample, *nk_path, "not16")) == ["/".join((*nk_path, "CD16pos"))]
    assert _node(sample, *nk_path, "not_NK").find("Gate") is None  # NOT of a boolean: no gate to copy
    back = gate_tube(template_from_workspace(wsp, "hand", panel.name, fcs), open_tube(fcs, panel, transforms).view())
    assert _without_helpers(_counts(back)) == want
    ws = fk.Workspace(str(wsp), fcs_samples=[str(fcs)])
    ws.analyze_samples(group_name="hand", use_mp=False)
    report = ws.get_gating_results(fcs.name).report
    flowkit = {name: int(n) for name, n in zip(report["gate_name"], report["count"], strict=True)}
    assert _without_helpers(flowkit) == want


# ---- the XML as FlowJo 10 writes it --------------------------------------------------------------

# The elements compared with FlowJo's own workspaces (FlowJo's display state, <Graph> and the like,
# is left out: FlowJo fills it in).
CHECKED = ("Workspace", "Matrices", "Groups", "GroupNode", "Group", "Criteria", "SampleRefs", "SampleRef",
           "SampleList", "Sample", "DataSet", "transforms:spilloverMatrix", "Transformations", "transforms:linear",
           "Keywords", "Keyword", "SampleNode", "Subpopulations", "Population", "Gate", "gating:RectangleGate",
           "gating:PolygonGate", "gating:dimension", "data-type:fcs-dimension", "gating:vertex",
           "gating:coordinate", "data-type:parameters", "data-type:parameter", "transforms:spillover",
           "transforms:coefficient")
# Attributes FlowJo always writes that we leave out: a population's event count (the writer has the
# gates, not the counts; FlowJo counts when it opens the workspace).
LEFT_OUT = {"Population": {"count"}}
# Attributes we write that these FlowJo workspaces do not: the parent's gate id on the gate element
# itself (FlowJo 10.6 writes only its id there) and a matrix's "spectral" and
# "userProvidedCompInfix" (FlowKit's writer, as FlowJo 10.8 writes them).
EXTRA = {"gating:RectangleGate": {"gating:parent_id"}, "gating:PolygonGate": {"gating:parent_id"},
         "transforms:spilloverMatrix": {"spectral"}, "transforms:spillover": {"userProvidedCompInfix"},
         "data-type:parameter": {"userProvidedCompInfix"}}
# Elements FlowJo writes that these workspaces happen not to hold: logicle transforms (FlowJo 10.8
# writes them) and the boolean nodes with their operands (checked on their own below).
ELSEWHERE = {"transforms:logicle", "AndNode", "OrNode", "NotNode", "Dependents", "Dependent"}
BOOLEAN_NODES = {"AndNode", "OrNode", "NotNode"}
_PREFIX = {"http://www.isac-net.org/std/Gating-ML/v2.0/gating": "gating:",
           "http://www.isac-net.org/std/Gating-ML/v2.0/transformations": "transforms:",
           "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes": "data-type:"}


def _qname(tag: str) -> str:
    if tag.startswith("{"):
        uri, local = tag[1:].split("}")
        return _PREFIX.get(uri, "") + local
    return tag


def _shape(paths) -> dict:
    """Per element name over the files: attributes on every one (``always``), on any (``ever``),
    the names of its parents and children, and child order (pairs (a, b): an a before a b)."""
    shape = defaultdict(lambda: {"n": 0, "always": None, "ever": set(), "parents": set(), "children": set(),
                                 "order": set()})

    def walk(el, parent):
        k = _qname(el.tag)
        s = shape[k]
        attrs = {_qname(a) for a in el.attrib}
        s["n"] += 1
        s["always"] = attrs if s["always"] is None else s["always"] & attrs
        s["ever"] |= attrs
        s["parents"].add(parent)
        tags = list(dict.fromkeys(_qname(c.tag) for c in el))
        s["children"] |= set(tags)
        s["order"] |= {(a, b) for i, a in enumerate(tags) for b in tags[i + 1:]}
        for c in el:
            walk(c, k)

    for path in paths:
        walk(ET.parse(path).getroot(), None)
    return shape


@pytest.mark.parametrize("which", ["batch", "booleans"])
def test_xml_follows_real_flowjo_10_workspaces(which, request):
    """Element names, nesting, child order and attributes as FlowJo 10 writes them (the FlowJo
    workspaces in ../shared: FlowJo 10.5-10.7), but for LEFT_OUT and EXTRA. Boolean nodes (none in
    those workspaces) carry a population's attributes and FlowJo's children."""
    shared = shared_dir()
    real = sorted(shared.glob("realdata/*/*.wsp")) + sorted(shared.glob("flowjo/**/*.wsp")) if shared else []
    if not real:
        pytest.skip("no FlowJo workspaces in ../shared")
    wsp = request.getfixturevalue(which)[0]
    flowjo, ours = _shape(real), _shape([wsp])
    assert set(ours) - set(flowjo) - ELSEWHERE == set()
    for k in CHECKED:
        if k not in ours:
            continue
        f, o = flowjo[k], ours[k]
        assert f["always"] - LEFT_OUT.get(k, set()) <= o["always"], (k, f["always"] - o["always"])
        assert o["ever"] - f["ever"] <= EXTRA.get(k, set()), (k, o["ever"] - f["ever"])
        assert o["parents"] - ELSEWHERE <= f["parents"], (k, o["parents"] - f["parents"])
        assert o["children"] - ELSEWHERE <= f["children"], (k, o["children"] - f["children"])
        swapped = {(a, b) for a, b in o["order"] if (b, a) in f["order"] and (a, b) not in f["order"]}
        assert not swapped, (k, swapped)
    assert ours["SampleNode"]["always"] >= {"count"}  # the file's $TOT
    for k in BOOLEAN_NODES & set(ours):
        assert flowjo["Population"]["always"] - LEFT_OUT["Population"] <= ours[k]["always"], k
        assert ours[k]["parents"] == {"Subpopulations"}
        assert ours[k]["children"] <= {"Graph", "Gate", "Subpopulations", "Dependents"}, k
        # FlowJo's order: Graph, Gate, Subpopulations, Dependents
        assert not {("Dependents", "Subpopulations"), ("Dependents", "Gate"), ("Subpopulations", "Gate")} & \
            ours[k]["order"], k
    if which == "booleans":
        assert BOOLEAN_NODES <= set(ours)
        assert ours["Dependent"]["ever"] == {"name"} and ours["Dependents"]["parents"] == BOOLEAN_NODES


def test_a_complemented_rectangle_is_written_with_events_outside(batch, tmp_path):
    """FlowKit's writer leaves eventsInside out (FlowJo then reads "inside"): a gate used as its
    complement is written eventsInside="0", and FlowKit reads it back as a complement."""
    import flowkit as fk

    from mrdflow.gating import FlowJoSample, write_workspace

    _, tmp, gated = batch
    r, _, g = gated[0]
    s = copy.deepcopy(g.strategy)
    outside = copy.deepcopy(s.get_gate("TimeOK"))
    outside.gate_name, outside.use_complement = "TimeOutside", True
    s.add_gate(outside, ("root",))
    wsp = write_workspace(tmp_path / "c.wsp", [FlowJoSample("c.fcs", str(tmp / r["fcs"]), s, None)])
    inner = ET.parse(wsp).getroot().find(".//Population[@name='TimeOutside']/Gate")[0]
    assert inner.get("eventsInside") == "0"
    strategy = fk.Workspace(str(wsp), load_missing_file_data=True).get_gating_strategy("c.fcs")
    assert strategy.get_gate("TimeOutside").use_complement
    assert not strategy.get_gate("TimeOK").use_complement


def test_refuses_duplicate_names_and_gates_flowjo_cannot_hold(tmp_path, batch):
    import flowkit as fk

    from mrdflow.gating import FlowJoSample, GatingError, write_workspace

    wsp, tmp, gated = batch
    r, _, g = gated[0]
    one = FlowJoSample("a.fcs", str(tmp / r["fcs"]), g.strategy, None)
    with pytest.raises(GatingError, match="unique"):
        write_workspace(tmp_path / "x.wsp", [one, one])
    with pytest.raises(GatingError, match="no samples"):
        write_workspace(tmp_path / "x.wsp", [])

    def refused(strategy, match):
        with pytest.raises(GatingError, match=match):
            write_workspace(tmp_path / "x.wsp", [FlowJoSample("b.fcs", str(tmp / r["fcs"]), strategy, None)])

    template = fk.parse_gating_xml(str(REPO / "resources/gating/pb_nk.xml"))
    ellipse = copy.deepcopy(template)
    dims = [fk.Dimension("FSC-A", "uncompensated"), fk.Dimension("SSC-A", "uncompensated")]
    ellipse.add_gate(fk.gates.EllipsoidGate("E", dims, [0.5, 0.5], [[1, 0], [0, 1]], 1), ("root",))
    refused(ellipse, "EllipsoidGate")
    slash = copy.deepcopy(template)  # FlowJo names boolean operands by "/"-separated paths
    bad_name = copy.deepcopy(template.get_gate("TimeOK"))
    bad_name.gate_name = "Time/OK"
    slash.add_gate(bad_name, ("root",))
    refused(slash, "path separator")
    # NOT of a complemented gate is the gate itself: FlowJo has no node for that
    double = copy.deepcopy(template)
    double.add_gate(fk.gates.BooleanGate("X", "not", [{"ref": "CD56pos", "path": NK_PARENT, "complement": True}]),
                    NK_PARENT)
    refused(double, "NOT gate 'X'")
    # the helper's name is taken by a gate of the strategy
    clash = copy.deepcopy(template)
    clash.add_gate(fk.gates.BooleanGate(f"NOT CD16pos{HELPER_SUFFIX}", "not",
                                        [{"ref": "CD16pos", "path": NK_PARENT, "complement": False}]), NK_PARENT)
    clash.add_gate(fk.gates.BooleanGate("Y", "and", [{"ref": "CD56pos", "path": NK_PARENT, "complement": False},
                                                     {"ref": "CD16pos", "path": NK_PARENT, "complement": True}]),
                   NK_PARENT)
    refused(clash, "helper population")
    assert not (tmp_path / "x.wsp").exists()
    # the template's NK (an OR of sibling rectangles) is written
    write_workspace(tmp_path / "nk.wsp", [FlowJoSample("c.fcs", str(tmp / r["fcs"]), template, None)])
    assert ET.parse(tmp_path / "nk.wsp").getroot().find(".//OrNode[@name='NK']") is not None

