"""FlowJo workspace import on tiny hand-made workspaces: which sample a file is, each sample's own
gates, gates addressed by full path, and clear errors for bad input."""
import numpy as np
import pytest

from mrdflow.gating import GatingError, TubeView, gate_tube, template_from_workspace
from mrdflow.io import read_fcs, write_fcs
from mrdflow.panels import Panel, resolve_panel

NS = ('xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
      'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
      'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"')


def _rect(name: str, lo: float, hi: float, children: str = "") -> str:
    """A population gated A in [lo, hi) (B unbounded), with nested populations."""
    sub = f"<Subpopulations>{children}</Subpopulations>" if children else ""
    return (f'<Population name="{name}" owningGroup=""><Gate gating:id="{name}{lo}"><gating:RectangleGate>'
            f'<gating:dimension gating:min="{lo}" gating:max="{hi}"><data-type:fcs-dimension data-type:name="A"/>'
            f'</gating:dimension></gating:RectangleGate></Gate>{sub}</Population>')


def _sample(sid: int, name: str, uri_name: str, fil: str, pops: str) -> str:
    return (f'<Sample><DataSet uri="file:///lab/acq/{uri_name}" sampleID="{sid}"/><Transformations/>'
            f'<Keywords><Keyword name="$FIL" value="{fil}"/></Keywords>'
            f'<SampleNode name="{name}" sampleID="{sid}" count="10"><Subpopulations>{pops}</Subpopulations>'
            f'</SampleNode></Sample>')


def _workspace(path, samples: list[str], ids: list[int]):
    refs = "".join(f'<SampleRef sampleID="{i}"/>' for i in ids)
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?><Workspace version="20.0" flowJoVersion="10.7.1" {NS}>'
                    f'<Groups><GroupNode name="All Samples"><Group name="All Samples"><SampleRefs>{refs}'
                    f'</SampleRefs></Group></GroupNode></Groups><SampleList>{"".join(samples)}</SampleList>'
                    '</Workspace>')
    return path


def _fcs(path, fil: str):
    a = np.arange(10, dtype=np.float32) * 10  # A = 0, 10, ..., 90
    return write_fcs(path, np.column_stack([a, a]), ["A", "B"], metadata={"$FIL": fil})


def _counts(template, fcs) -> dict[tuple[str, ...], int]:
    d = read_fcs(fcs)
    lin = {"type": "linear", "t": 262144}
    view = TubeView(d, resolve_panel(Panel("flowjo", "", "", (), ()), d.pnn, d.pns), None,
                    {"fluorescence": lin, "scatter": lin})
    g = gate_tube(template, view)
    rows = {r["population"]: r["count"] for r in g.table()}
    assert sorted(rows.values()) == sorted(s.count for s in g.steps)
    return {s.path: s.count for s in g.steps}


def test_renamed_files_match_by_flowjo_name_and_keep_their_own_gates(tmp_path):
    # Both files were renamed after acquisition: $FIL is the same instrument name for both.
    wsp = _workspace(tmp_path / "w.wsp", [
        _sample(1, "s1.fcs", "s1.fcs", "Tube_001.fcs", _rect("Big", 0, 50, _rect("X", 0, 20))
                + _rect("Other", 60, 100, _rect("X", 80, 100))),
        _sample(2, "s2.fcs", "s2.fcs", "Tube_001.fcs", _rect("Big", 0, 30)),  # a custom sample gate
    ], [1, 2])
    f1, f2 = _fcs(tmp_path / "s1.fcs", "Tube_001.fcs"), _fcs(tmp_path / "s2.fcs", "Tube_001.fcs")
    c1 = _counts(template_from_workspace(wsp, "All Samples", "p", f1), f1)
    # "X" under two parents, each counted by its own path.
    assert c1 == {("root", "Big"): 5, ("root", "Big", "X"): 2, ("root", "Other"): 4, ("root", "Other", "X"): 2}
    d = read_fcs(f1)
    lin = {"type": "linear", "t": 262144}
    g = gate_tube(template_from_workspace(wsp, "All Samples", "p", f1),
                  TubeView(d, resolve_panel(Panel("flowjo", "", "", (), ()), d.pnn, d.pns), None,
                           {"fluorescence": lin, "scatter": lin}))
    assert {r["population"]: r["pct_parent"] for r in g.table()} == {"Big": 50.0, "Big/X": 40.0, "Other": 40.0,
                                                                     "Other/X": 50.0}
    t2 = template_from_workspace(wsp, "All Samples", "p", f2)
    assert _counts(t2, f2) == {("root", "Big"): 3}
    assert t2.source.endswith("#All Samples:s2.fcs")
    # sample_id (FlowJo name) still picks a sample explicitly.
    t = template_from_workspace(wsp, "All Samples", "p", f1, sample_id="s2.fcs")
    assert _counts(t, f1) == {("root", "Big"): 3}


def test_match_falls_back_to_fil_then_file_stem(tmp_path):
    wsp = _workspace(tmp_path / "w.wsp", [
        _sample(1, "Specimen_A", "elsewhere.fcs", "orig_a.fcs", _rect("G", 0, 50)),
        _sample(2, "Tube B", "tube b.FCS", "orig_b.fcs", _rect("G", 0, 20)),
    ], [1, 2])
    by_fil = _fcs(tmp_path / "renamed.fcs", "orig_a.fcs")
    assert template_from_workspace(wsp, "All Samples", "p", by_fil).source.endswith(":Specimen_A")
    by_stem = _fcs(tmp_path / "TUBE B.fcs", "unrelated.fcs")
    assert template_from_workspace(wsp, "All Samples", "p", by_stem).source.endswith(":Tube B")


def test_missing_and_ambiguous_samples_are_named(tmp_path):
    wsp = _workspace(tmp_path / "w.wsp", [
        _sample(1, "s1.fcs", "s1.fcs", "Tube_001.fcs", _rect("G", 0, 50)),
        _sample(2, "s2.fcs", "s2.fcs", "Tube_001.fcs", _rect("G", 0, 50)),
    ], [1, 2])
    other = _fcs(tmp_path / "other.fcs", "nothing.fcs")
    with pytest.raises(GatingError, match=r"w\.wsp: FCS file 'other\.fcs' is not a sample of group 'All Samples'"
                                          r".*'s1\.fcs', 's2\.fcs'"):
        template_from_workspace(wsp, "All Samples", "p", other)
    # Only $FIL could match it, and two samples share that $FIL.
    twin = _fcs(tmp_path / "twin.fcs", "Tube_001.fcs")
    with pytest.raises(GatingError, match=r"'twin\.fcs' matches 2 samples .* \$FIL 'Tube_001\.fcs'"):
        template_from_workspace(wsp, "All Samples", "p", twin)
    with pytest.raises(GatingError, match=r"w\.wsp: sample 'nope\.fcs' is not a sample of group 'All Samples'"):
        template_from_workspace(wsp, "All Samples", "p", other, sample_id="nope.fcs")
    with pytest.raises(GatingError, match=r"no sample group 'nope'"):
        template_from_workspace(wsp, "nope", "p", other)


def test_truncated_and_foreign_xml_are_refused(tmp_path):
    good = _workspace(tmp_path / "w.wsp", [_sample(1, "s1.fcs", "s1.fcs", "x", _rect("G", 0, 50))], [1])
    fcs = _fcs(tmp_path / "s1.fcs", "x")
    cut = tmp_path / "cut.wsp"
    cut.write_text(good.read_text()[:300])
    with pytest.raises(GatingError, match=r"cut\.wsp: not a readable FlowJo workspace \(XML error"):
        template_from_workspace(cut, "All Samples", "p", fcs)
    foreign = tmp_path / "gml.wsp"
    foreign.write_text('<?xml version="1.0"?><gating:Gating-ML xmlns:gating="urn:x"/>')
    with pytest.raises(GatingError, match=r"gml\.wsp: not a FlowJo 10 workspace \(root element <Gating-ML>"):
        template_from_workspace(foreign, "All Samples", "p", fcs)
    with pytest.raises(GatingError, match=r"absent\.wsp: FlowJo workspace not readable"):
        template_from_workspace(tmp_path / "absent.wsp", "All Samples", "p", fcs)


def test_pipeline_gives_each_tube_its_own_workspace_sample(tmp_path):
    from mrdflow.sample import SampleSettings

    wsp = _workspace(tmp_path / "w.wsp", [
        _sample(1, "s1.fcs", "s1.fcs", "a", _rect("G", 0, 50)),
        _sample(2, "s2.fcs", "s2.fcs", "b", _rect("G", 0, 20)),
    ], [1, 2])
    f1, f2, f3 = (_fcs(tmp_path / f"s{i}.fcs", "z") for i in (1, 2, 3))
    ws = {"path": str(wsp), "group": "All Samples", "fcs": str(f1)}
    settings = SampleSettings(panels={}, panel_config={"p": {"workspace": ws}}, gating_dir=tmp_path)
    assert settings.template("p", f2).source.endswith(":s2.fcs")  # the tube's own gates
    assert settings.template("p", f3).source.endswith(":s1.fcs")  # not in the workspace: the template sample's
    pinned = SampleSettings(panels={}, panel_config={"p": {"workspace": {**ws, "sample_id": "s1.fcs"}}},
                            gating_dir=tmp_path)
    assert pinned.template("p", f2).source.endswith(":s1.fcs")
