"""A reviewer's gates against the data-driven ones (mrdflow.review compare_gates, check_compensation,
check_transforms): both FlowKit strategies of one simulated tube, the data-driven one from gating it
and the reviewed one read back from the workspace it was written to, then edited as a reviewer would."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest
from review.review_cohort import NGF1, NK, T, edited, gate_batch, rename, sample_el, uncompensated

from mrdflow.gating._flowjo_out import HELPER_SUFFIX
from mrdflow.review import GateChange, ReviewError, check_compensation, check_transforms, compare_gates
from mrdflow.review._compare import TOLERANCE, gate_coordinates

WHERE = "review workspace r.wsp, sample 'x.fcs' (tube S.t)"
NUCLEATED = ("root", "TimeOK", "Singlets", "Nucleated")
NK_PARENT = ("root", "TimeOK", "Singlets", "Cells", "Viable", "CD45pos", "Lymphocytes", "CD3neg_Dumpneg")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    return gate_batch(tmp_path_factory.mktemp("review_compare"))


@pytest.fixture(scope="module")
def ngf(batch):
    """NGF tube 1: (gated tube, data-driven strategy, reviewed strategy as saved unmoved)."""
    wsp, gated = batch
    g = gated[NGF1]
    return g, g.gating.strategy, g.reviewed(wsp)


@pytest.fixture(scope="module")
def nk(batch):
    wsp, gated = batch
    g = gated[NK]
    return g, g.gating.strategy, g.reviewed(wsp)


def _dim(strategy, gate: str, channel: str, path=None):
    gate = strategy.get_gate(gate, gate_path=path)
    return next(d for d in gate.dimensions if d.id.removeprefix("Comp-") == channel)


def test_gates_saved_back_unmoved_are_no_change(ngf, nk):
    for g, data, reviewed in (ngf, nk):
        assert compare_gates(data, reviewed, where=WHERE, tube="t", labels=g.labels) == []
        check_transforms(data, reviewed, where=WHERE, panel=g.panel)
        check_compensation(reviewed, g.opened.compensation, where=WHERE, panel=g.panel)
    # the data-driven gates themselves read the file's own matrix ("FCS"): nothing to compare
    check_compensation(ngf[1], ngf[0].opened.compensation, where=WHERE, panel="ngf_tube1")


def test_a_moved_rectangle_bound_is_one_change_with_both_coordinates(ngf):
    g, data, reviewed = ngf
    moved = copy.deepcopy(reviewed)
    lo, cd138 = _dim(data, "PC", "FITC-A").min, _dim(data, "PC", "BV421-A").min
    _dim(moved, "PC", "FITC-A").min += 0.05
    (change,) = compare_gates(data, moved, where=WHERE, tube="ngf1", labels=g.labels)
    assert isinstance(change, GateChange)
    assert (change.tube, change.gate, change.path, change.change) == ("ngf1", "PC", "TimeOK/Singlets/Nucleated/PC",
                                                                      "moved")
    assert change.data == {"CD38 (FITC-A)": [pytest.approx(lo, abs=1e-12), None],
                           "CD138 (BV421-A)": [pytest.approx(cd138, abs=1e-9), None]}
    assert change.reviewed == {"CD38 (FITC-A)": [pytest.approx(lo + 0.05, abs=1e-9), None],
                               "CD138 (BV421-A)": [pytest.approx(cd138, abs=1e-9), None]}
    assert change.count_data is None and change.count_reviewed is None
    assert change.as_dict()["data"] == change.data and change.as_dict()["change"] == "moved"
    # without labels the coordinates are named by channel
    (plain,) = compare_gates(data, moved, where=WHERE, tube="ngf1")
    assert set(plain.data) == {"FITC-A", "BV421-A"}


def test_an_upper_bound_set_by_the_reviewer_is_a_move(ngf):
    g, data, reviewed = ngf
    moved = copy.deepcopy(reviewed)
    _dim(moved, "MastCells", "APC-A").max = 0.95
    (change,) = compare_gates(data, moved, where=WHERE, tube="ngf1", labels=g.labels)
    assert change.gate == "MastCells" and change.data["CD117 (APC-A)"][1] is None
    assert change.reviewed["CD117 (APC-A)"][1] == pytest.approx(0.95)


@pytest.mark.parametrize("shift, moved", [(0.4 * TOLERANCE, False), (-0.9 * TOLERANCE, False), (2 * TOLERANCE, True)])
def test_moves_below_the_tolerance_are_no_change(ngf, shift, moved):
    g, data, reviewed = ngf
    rect, poly = copy.deepcopy(reviewed), copy.deepcopy(reviewed)
    _dim(rect, "NRBC", "PerCP-Cy5-5-A").max += shift
    singlets = poly.get_gate("Singlets")
    singlets.vertices = [list(v) for v in singlets.vertices]
    singlets.vertices[2][1] += shift
    for strategy, gate in ((rect, "NRBC"), (poly, "Singlets")):
        changes = compare_gates(data, strategy, where=WHERE, tube="ngf1", labels=g.labels)
        assert [c.gate for c in changes] == ([gate] if moved else [])


def test_a_moved_polygon_vertex_is_a_change(ngf):
    _, data, reviewed = ngf
    moved = copy.deepcopy(reviewed)
    singlets = moved.get_gate("Singlets")
    singlets.vertices = [list(v) for v in singlets.vertices]
    singlets.vertices[3][0] -= 0.02
    (change,) = compare_gates(data, moved, where=WHERE, tube="ngf1")
    assert (change.gate, change.path, change.change) == ("Singlets", "TimeOK/Singlets", "moved")
    assert change.data["channels"] == change.reviewed["channels"] == ["FSC-A", "FSC-H"]
    before, after = np.array(change.data["vertices"]), np.array(change.reviewed["vertices"])
    assert before.shape == after.shape == (4, 2)
    assert after[3, 0] == pytest.approx(before[3, 0] - 0.02) and np.allclose(np.delete(after, 3, 0),
                                                                             np.delete(before, 3, 0))


def test_a_boolean_gate_with_another_operation_is_redefined(nk):
    g, data, reviewed = nk
    other = copy.deepcopy(reviewed)
    other.get_gate("NK", gate_path=NK_PARENT).type = "and"
    (change,) = compare_gates(data, other, where=WHERE, tube="nk", labels=g.labels)
    prefix = "TimeOK/Singlets/Cells/Viable/CD45pos/Lymphocytes/CD3neg_Dumpneg"
    assert (change.gate, change.path, change.change) == ("NK", f"{prefix}/NK", "redefined")
    assert change.data == {"op": "or", "refs": [f"{prefix}/CD56pos", f"{prefix}/CD16pos"]}
    assert change.reviewed == {"op": "and", "refs": [f"{prefix}/CD56pos", f"{prefix}/CD16pos"]}


def test_a_boolean_gate_with_other_operands_is_redefined(nk):
    _, data, reviewed = nk
    fewer, negated = copy.deepcopy(reviewed), copy.deepcopy(reviewed)
    gate = fewer.get_gate("NK", gate_path=NK_PARENT)
    gate.gate_refs = gate.gate_refs[:1]
    gate = negated.get_gate("NK", gate_path=NK_PARENT)
    gate.gate_refs = [gate.gate_refs[0], {**gate.gate_refs[1], "complement": True}]
    (change,) = compare_gates(data, fewer, where=WHERE, tube="nk")
    assert change.change == "redefined" and [r.rsplit("/", 1)[-1] for r in change.reviewed["refs"]] == ["CD56pos"]
    (change,) = compare_gates(data, negated, where=WHERE, tube="nk")
    assert change.change == "redefined" and change.reviewed["refs"][1].startswith("not TimeOK/")


def test_a_gate_of_another_kind_is_redefined(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    rect = other.get_gate("PC")
    other.remove_gate("PC", gate_path=NUCLEATED)
    other.add_gate(fk.gates.PolygonGate("PC", rect.dimensions, [[0.6, 0.4], [1.0, 0.4], [1.0, 1.0], [0.6, 1.0]]),
                   gate_path=NUCLEATED)
    (change,) = compare_gates(data, other, where=WHERE, tube="ngf1")
    assert (change.gate, change.change) == ("PC", "redefined")
    assert "vertices" in change.reviewed and "vertices" not in change.data


def test_a_removed_gate_is_an_error_naming_it(ngf):
    _, data, reviewed = ngf
    fewer = copy.deepcopy(reviewed)
    fewer.remove_gate("MastCells", gate_path=NUCLEATED)
    with pytest.raises(ReviewError, match=r"'MastCells' \(at TimeOK/Singlets/Nucleated/MastCells\)") as e:
        compare_gates(data, fewer, where=WHERE, tube="ngf1")
    assert str(e.value).startswith(WHERE) and "'PC'" not in str(e.value)


def test_a_renamed_gate_is_an_error_naming_both_names(batch, tmp_path):
    wsp, gated = batch
    g = gated[NGF1]
    renamed = edited(wsp, tmp_path / "renamed.wsp", rename(g.name, "PC", "Plasma cells"))
    with pytest.raises(ReviewError, match=r"'PC' \(at TimeOK/Singlets/Nucleated/PC\) not in the reviewed") as e:
        compare_gates(g.gating.strategy, g.reviewed(renamed), where=WHERE, tube="ngf1")
    assert "mrdflow did not write: ['Plasma cells']" in str(e.value)


def test_a_gate_moved_under_another_parent_is_an_error(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    gate = other.get_gate("BCP")
    other.remove_gate("BCP", gate_path=NUCLEATED)
    other.add_gate(gate, gate_path=("root", "TimeOK", "Singlets"))
    with pytest.raises(ReviewError, match="'BCP' .at TimeOK/Singlets/Nucleated/BCP."):
        compare_gates(data, other, where=WHERE, tube="ngf1")


def test_the_hint_of_a_missing_gate_leaves_out_the_exports_helpers(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    # what the export writes for a time QC of two flow-rate gaps (TimeOK = AND of NOT TimeOK_bad1, NOT TimeOK_bad2)
    helper = copy.deepcopy(other.get_gate("TimeOK"))
    helper.gate_name = f"NOT TimeOK_bad1{HELPER_SUFFIX}"
    other.add_gate(helper, gate_path=("root",))
    other.remove_gate("MastCells", gate_path=NUCLEATED)
    with pytest.raises(ReviewError, match="'MastCells'") as e:
        compare_gates(data, other, where=WHERE, tube="ngf1")
    assert HELPER_SUFFIX not in str(e.value)


def test_a_gate_added_by_the_reviewer_is_ignored(ngf):
    _, data, reviewed = ngf
    more = copy.deepcopy(reviewed)
    extra = copy.deepcopy(more.get_gate("PC"))
    extra.gate_name = "PC_bright"
    more.add_gate(extra, gate_path=(*NUCLEATED, "PC"))
    assert ("PC_bright", (*NUCLEATED, "PC")) in more.get_gate_ids()
    assert compare_gates(data, more, where=WHERE, tube="ngf1") == []


def test_gate_coordinates_describe_each_kind(ngf, nk):
    _, data, _ = ngf
    rect = gate_coordinates(data.get_gate("NRBC"), {"PerCP-Cy5-5-A": "CD45", "BV421-A": "CD138"})
    assert list(rect) == ["CD45 (PerCP-Cy5-5-A)", "SSC-A", "CD138 (BV421-A)"]
    assert rect["SSC-A"] == [None, pytest.approx(0.12)]
    poly = gate_coordinates(data.get_gate("Singlets"))
    assert poly["channels"] == ["FSC-A", "FSC-H"] and len(poly["vertices"]) == 4
    assert all(isinstance(x, float) for v in poly["vertices"] for x in v)
    ellipse = fk.gates.EllipsoidGate("Blob", [fk.Dimension("FSC-A"), fk.Dimension("SSC-A")], [0.5, 0.5],
                                     [[1.0, 0.0], [0.0, 1.0]], 1.0)
    with pytest.raises(ReviewError, match=r"unsupported gate type EllipsoidGate \('Blob'\)"):
        gate_coordinates(ellipse)


# ---- compensation -------------------------------------------------------------------------------

def test_another_spillover_is_an_error_naming_both_values(batch, tmp_path):
    wsp, gated = batch
    g = gated[NGF1]

    def spill(value: str):
        def edit(root):
            coef = sample_el(root, g.name).find(f"{{{T}}}spilloverMatrix").find(f"{{{T}}}spillover").findall(
                f"{{{T}}}coefficient")[1]  # BV421-A into BV510-A: 0.16
            coef.set(f"{{{T}}}value", value)
        return edit

    reviewed = g.reviewed(edited(wsp, tmp_path / "spill.wsp", spill("0.3")))
    with pytest.raises(ReviewError, match=r"spillover BV421-A into BV510-A is 0\.3 in the workspace, 0\.16 in the "
                                          r"pipeline") as e:
        check_compensation(reviewed, g.opened.compensation, where=WHERE, panel="ngf_tube1")
    assert str(e.value).startswith(WHERE) and "panels.ngf_tube1.compensation" in str(e.value)
    assert g.opened.compensation.source in str(e.value)
    # within 1e-6 it is the same matrix
    check_compensation(g.reviewed(edited(wsp, tmp_path / "close.wsp", spill("0.1600004"))), g.opened.compensation,
                       where=WHERE, panel="ngf_tube1")


def test_the_pipelines_matrix_is_compared_too(ngf):
    g, _, reviewed = ngf
    comp = g.opened.compensation
    spill = np.array(comp.spill, dtype=float)
    spill[0, 7] = 0.01  # BV421-A into APC-C750-A: none in the file's matrix
    with pytest.raises(ReviewError, match=r"BV421-A into APC-C750-A is 0 in the workspace, 0\.01 in the pipeline"):
        check_compensation(reviewed, dataclasses.replace(comp, spill=spill), where=WHERE, panel="ngf_tube1")


def test_a_matrix_over_other_detectors_is_an_error(ngf):
    g, _, reviewed = ngf
    comp = g.opened.compensation
    fewer = dataclasses.replace(comp, detectors=comp.detectors[:-1], spill=np.asarray(comp.spill)[:-1, :-1])
    with pytest.raises(ReviewError, match="covers detectors") as e:
        check_compensation(reviewed, fewer, where=WHERE, panel="ngf_tube1")
    assert "APC-C750-A" in str(e.value)


def test_a_compensated_workspace_for_an_uncompensated_tube_is_an_error(ngf):
    _, _, reviewed = ngf
    with pytest.raises(ReviewError, match=r"compensates with \['Acquisition-defined'\], but the pipeline does not "
                                          r"compensate this tube \(config panels\.ngf_tube1\.compensation\)"):
        check_compensation(reviewed, None, where=WHERE, panel="ngf_tube1")


def test_an_uncompensated_workspace_for_an_uncompensated_tube_is_fine(ngf):
    _, _, reviewed = ngf
    plain = copy.deepcopy(reviewed)
    for gid, path in plain.get_gate_ids():
        for d in getattr(plain.get_gate(gid, gate_path=path), "dimensions", ()):
            d.compensation_ref = "uncompensated"
    check_compensation(plain, None, where=WHERE, panel="ngf_tube1")


def test_an_uncompensated_workspace_for_a_compensated_tube_is_an_error(batch, tmp_path):
    wsp, gated = batch
    g = gated[NGF1]
    reviewed = g.reviewed(edited(wsp, tmp_path / "uncompensated.wsp", uncompensated(g.name)))
    assert _dim(reviewed, "PC", "FITC-A").compensation_ref in (None, "uncompensated")  # FlowKit reads it so
    with pytest.raises(ReviewError, match="compensat"):
        check_compensation(reviewed, g.opened.compensation, where=WHERE, panel="ngf_tube1")


# ---- transforms ---------------------------------------------------------------------------------

def test_another_transform_is_an_error_naming_gate_and_channel(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    ref = _dim(other, "PC", "FITC-A").transformation_ref
    other.transformations[ref] = fk.transforms.LogicleTransform(262144.0, 1.0, 4.5, 0.0)
    with pytest.raises(ReviewError, match=r"gate 'TimeOK/Singlets/Nucleated/PC' channel 'FITC-A' has transform") as e:
        check_transforms(data, other, where=WHERE, panel="ngf_tube1")
    assert str(e.value).startswith(WHERE) and "config panels.ngf_tube1.transform" in str(e.value)
    assert "w: 1.0" in str(e.value)


def test_a_linear_scale_of_another_range_is_an_error(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    ref = _dim(other, "Singlets", "FSC-H").transformation_ref
    other.transformations[ref] = fk.transforms.LinearTransform(131072.0, 0.0)
    with pytest.raises(ReviewError, match="'TimeOK/Singlets' channel 'FSC-H'"):
        check_transforms(data, other, where=WHERE, panel="ngf_tube1")


def test_an_equal_transform_under_another_name_is_the_same(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    ref = _dim(other, "PC", "FITC-A").transformation_ref
    other.transformations[ref] = fk.transforms.LogicleTransform(262144.0, 0.5, 4.5, 0.0)
    check_transforms(data, other, where=WHERE, panel="ngf_tube1")


def test_a_gate_on_another_channel_is_an_error(ngf):
    _, data, reviewed = ngf
    other = copy.deepcopy(reviewed)
    _dim(other, "PC", "BV421-A").id = "BV510-A"
    with pytest.raises(ReviewError, match=r"'TimeOK/Singlets/Nucleated/PC' no longer reads channel 'BV421-A'"):
        check_transforms(data, other, where=WHERE, panel="ngf_tube1")


def test_transforms_of_a_missing_gate_are_left_to_compare_gates(ngf):
    _, data, reviewed = ngf
    fewer = copy.deepcopy(reviewed)
    fewer.remove_gate("BCP", gate_path=NUCLEATED)
    check_transforms(data, fewer, where=WHERE, panel="ngf_tube1")


def test_the_workspace_path_is_kept_in_messages(ngf):
    _, data, reviewed = ngf
    fewer = copy.deepcopy(reviewed)
    fewer.remove_gate("NRBC", gate_path=NUCLEATED)
    where = f"review workspace {Path('reviewed/x.wsp')}, sample 'a.fcs' (tube S.ngf1)"
    with pytest.raises(ReviewError, match=r"^review workspace reviewed/x\.wsp, sample 'a\.fcs' \(tube S\.ngf1\)"):
        compare_gates(data, fewer, where=where, tube="ngf1")
