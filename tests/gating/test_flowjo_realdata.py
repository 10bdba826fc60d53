"""Real FlowJo 10 workspaces with expert gating (../shared/realdata): every sample's gates imported
by mrdflow, applied as drawn by mrdflow's engine, against the counts FlowJo itself saved."""
import csv
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from mrdflow.gating import TubeView, gate_tube, template_from_workspace
from mrdflow.io import read_fcs
from mrdflow.panels import Panel, resolve_panel

# folder, workspace, group, folder of the FCS files, gates (samples x gates)
SETS = [
    ("flowsom_68983_mouse", "gating.wsp", "All Samples", ".", 15),
    ("fcexpr_rptec_gfp", "07-Oct-2021.wsp", "Exp_part_3", "fcs", 144),
]


def _view(fcs: Path) -> TubeView:
    """The tube as the pipeline sees it (a static template uses the raw events and channel names)."""
    d = read_fcs(fcs)
    lin = {"type": "linear", "t": 262144}
    return TubeView(d, resolve_panel(Panel("flowjo", "", "", (), ()), d.pnn, d.pns), None,
                    {"fluorescence": lin, "scatter": lin})


def _flowjo_counts(path: Path) -> dict[str, dict[tuple[str, ...], int]]:
    out: dict[str, dict[tuple[str, ...], int]] = defaultdict(dict)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out[row["sample"]][("root", *row["gate_path"].split("/"))] = int(row["count"])
    return out


@pytest.mark.parametrize("folder,wsp,group,fcs_dir,n_gates", SETS, ids=[s[0] for s in SETS])
def test_every_gate_matches_flowjo(shared, folder, wsp, group, fcs_dir, n_gates, record_property):
    root = shared / "realdata" / folder
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    truth = _flowjo_counts(root / "flowjo_counts.tsv")
    files = {f.name: f for f in (root / fcs_dir).glob("*.fcs")}
    assert set(truth) <= set(files)
    compared, exact, off = 0, 0, []
    for sample, counts in sorted(truth.items()):
        fcs = files[sample]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            template = template_from_workspace(root / wsp, group, "flowjo", fcs)
            g = gate_tube(template, _view(fcs))
        ours = {s.path: s.count for s in g.steps}
        assert set(ours) == set(counts), sample  # every FlowJo gate, addressed by full path
        for path, want in counts.items():
            compared += 1
            exact += ours[path] == want
            if abs(ours[path] - want) > max(2, 0.01 * want):
                off.append((sample, "/".join(path[1:]), ours[path], want))
    print(f"{folder}: {compared} gates, {exact} exact, {compared - len(off)} within max(2, 1%)")
    record_property(f"{folder}_exact", exact)
    assert compared == n_gates
    assert not off, off
