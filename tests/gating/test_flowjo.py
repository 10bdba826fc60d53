"""FlowJo 10 workspaces as gating templates: imported by FlowKit, applied by our engine as drawn."""
import warnings
from pathlib import Path

import pytest

from mrdflow.gating import GatingError, TubeView, gate_tube, gate_tube_streamed, template_from_workspace
from mrdflow.io import read_fcs
from mrdflow.panels import Panel, resolve_panel

CASES = [
    ("simple_line_example/simple_poly_and_rect_v2_poly50.wsp", "my_group"),
    ("simple_line_example/single_ellipse_51_events.wsp", "All Samples"),
    ("simple_diamond_example/simple_diamond_example_quad_gate.wsp", "All Samples"),
    ("simple_diamond_example/test_data_diamond_asinh_rect.wsp", "All Samples"),
    ("simple_diamond_example/test_data_diamond_biex_rect.wsp", "All Samples"),
]


def _view(fcs: Path) -> TubeView:
    d = read_fcs(fcs)
    empty = Panel("flowjo", "", "", (), ())
    lin = {"type": "linear", "t": 262144}
    return TubeView(d, resolve_panel(empty, d.pnn, d.pns), None, {"fluorescence": lin, "scatter": lin})


@pytest.mark.parametrize("wsp,group", CASES)
def test_workspace_counts_equal_flowkit(shared, wsp, group):
    import flowkit as fk

    wsp_path = shared / "flowjo" / wsp
    fcs = next(wsp_path.parent.glob("*.fcs"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(wsp_path), fcs_samples=[fk.Sample(str(fcs))])
        sid = ws.get_sample_ids(group)[0]
        ws.analyze_samples(sample_id=sid)
        ref = ws.get_gating_results(sid).report
    template = template_from_workspace(wsp_path, group, "flowjo", fcs)
    assert template.static
    g = gate_tube(template, _view(fcs))
    ours = {s.gate_id: s.count for s in g.steps}
    assert ours == dict(zip(ref["gate_name"], ref["count"]))
    assert any(ours.values())
    # Streamed in chunks (7 events for the 100-event file): a workspace is applied as drawn, so
    # even a placement sample of half the events changes no count.
    v = _view(fcs)
    st = gate_tube_streamed(template, fcs, v.resolved, None, v.transform_specs, placement_events=max(1, v.n // 2),
                            chunk_events=7 if v.n < 1000 else 15_013)
    assert st.sample.n_events == max(1, v.n // 2) < st.n_events == v.n
    assert {s.gate_id: s.count for s in st.steps} == ours


def test_unknown_group_is_named(shared):
    wsp = shared / "flowjo" / "simple_line_example" / "simple_poly_and_rect.wsp"
    fcs = wsp.parent / "data_set_simple_line_100.fcs"
    with pytest.raises(GatingError, match="no sample group 'nope'"):
        template_from_workspace(wsp, "nope", "flowjo", fcs)
