"""Which tubes the reviewers' workspaces hold and which samples are redone (mrdflow.review.index_reviews,
mrdflow.review._index.gate_digests), on a workspace written by write_workspace: two simulated tubes,
NGF tube 1 and an NK tube, each with its own data-driven gates."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from review.review_cohort import (
    ALL,
    NGF1,
    NK,
    D,
    G,
    T,
    dimension,
    edited,
    gate_batch,
    hand_tube,
    keep_samples,
    node,
    rename,
    sample_el,
    scale_bound,
)

from mrdflow.review import ReviewedTube, index_reviews
from mrdflow.review._index import gate_digests

NGF_NAME, NK_NAME = Path(NGF1).name, Path(NK).name
BM, PB = "PT01_BM_baseline", "PT01_PB_baseline_nk"
NGF_TUBE = hand_tube(BM, "ngf1", NGF1)
NK_TUBE = hand_tube(PB, "nk", NK, panel="pb_nk")
OTHER = hand_tube("PT08_BM_baseline", "ngf1", "PT08/PT08_BM_baseline_ngf1.fcs")
SHEET = [NGF_TUBE, NK_TUBE, OTHER]


@pytest.fixture(scope="module")
def wsp(tmp_path_factory) -> Path:
    path, _ = gate_batch(tmp_path_factory.mktemp("review_index"))
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


# ---- matching a workspace's samples to the sheet ------------------------------------------------

def test_tubes_are_matched_by_file_name(wsp):
    idx = index_reviews([wsp], SHEET)
    assert idx.problems == () and idx.unchanged == ()
    assert idx.of(BM) == (ReviewedTube(BM, "ngf1", NGF1, str(wsp), NGF_NAME),)
    assert idx.of(PB) == (ReviewedTube(PB, "nk", NK, str(wsp), NK_NAME),)
    assert idx.of(OTHER.sample_id) == () and idx.workspaces_of(OTHER.sample_id) == []
    assert idx.workspaces_of(BM) == [str(wsp)]
    assert idx.of(BM)[0].as_dict() == {"sample_id": BM, "tube": "ngf1", "fcs": NGF1, "workspace": str(wsp),
                                       "ws_sample": NGF_NAME}


def _rename_sample(name: str, new_name: str, new_file: str | None = None):
    def edit(root: ET.Element) -> None:
        s = sample_el(root, name)
        s.find("SampleNode").set("name", new_name)
        if new_file is not None:
            ds = s.find("DataSet")
            ds.set("uri", ds.get("uri").rsplit("/", 1)[0] + "/" + new_file)
    return edit


def test_tubes_are_matched_by_name_without_fcs_ignoring_case(wsp, tmp_path):
    ws = edited(wsp, tmp_path / "renamed.wsp",
                _rename_sample(NGF_NAME, "pt01_bm_baseline_NGF1", "PT01_BM_BASELINE_NGF1.FCS"))
    idx = index_reviews([ws], SHEET)
    assert idx.problems == ()
    assert idx.of(BM) == (ReviewedTube(BM, "ngf1", NGF1, str(ws), "pt01_bm_baseline_NGF1"),)


def test_tubes_are_matched_by_the_file_of_the_data_set(wsp, tmp_path):
    ws = edited(wsp, tmp_path / "labelled.wsp", _rename_sample(NK_NAME, "NK tube, patient 1"))
    idx = index_reviews([ws], SHEET)
    assert idx.problems == ()
    assert idx.of(PB) == (ReviewedTube(PB, "nk", NK, str(ws), "NK tube, patient 1"),)


def test_a_sample_not_in_the_sheet_is_a_problem(wsp, tmp_path):
    ws = edited(wsp, tmp_path / "ghost.wsp", _rename_sample(NK_NAME, "ghost_nk.fcs", "ghost_nk.fcs"))
    idx = index_reviews([ws], SHEET)
    (problem,) = idx.problems
    assert str(ws) in problem and "'ghost_nk.fcs'" in problem and "not in the sample sheet" in problem
    assert list(idx.by_sample) == [BM]


def test_a_sample_two_tubes_could_be_is_a_problem(wsp):
    again = hand_tube("PT01_BM_rerun", "ngf1", f"rerun/{NGF_NAME}")
    idx = index_reviews([wsp], [NGF_TUBE, again, NK_TUBE])
    (problem,) = idx.problems
    assert f"'{NGF_NAME}'" in problem and f"{BM}.ngf1" in problem and "PT01_BM_rerun.ngf1" in problem
    assert list(idx.by_sample) == [PB]


def _broken(kind: str, wsp: Path, folder: Path) -> Path:
    path = folder / f"{kind}.wsp"
    raw = wsp.read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "not_xml":
        path.write_bytes(b"\x00\x01 FlowJo? no")
    elif kind == "not_flowjo":
        path.write_text('<?xml version="1.0"?><Gating-ML><gate/></Gating-ML>')
    elif kind == "flowjo_9":
        edited(wsp, path, lambda root: root.set("flowJoVersion", "9.9.6"))
    elif kind == "no_group":
        edited(wsp, path, lambda root: [gn.set("name", "Compensation") for gn in root.iter("GroupNode")
                                        if gn.get("name") == ALL])
    return path  # "missing": never written


@pytest.mark.parametrize("kind", ["truncated", "not_xml", "not_flowjo", "flowjo_9", "no_group", "missing"])
def test_an_unusable_workspace_is_a_problem_and_the_others_are_used(wsp, tmp_path, kind):
    bad = _broken(kind, wsp, tmp_path)
    good = _copy(wsp, tmp_path / "good.wsp")
    idx = index_reviews([bad, good], SHEET)
    (problem,) = idx.problems
    assert problem.startswith("review workspace not used: ") and str(bad) in problem
    assert {r.workspace for rs in idx.by_sample.values() for r in rs} == {str(good)}
    assert sorted(idx.by_sample) == [BM, PB]


def test_a_workspace_without_samples_is_a_problem(wsp, tmp_path):
    ws = edited(wsp, tmp_path / "empty.wsp", keep_samples())
    idx = index_reviews([ws], SHEET)
    assert idx.problems == (f"{ws}: the workspace holds no sample",)
    assert dict(idx.by_sample) == {}


def test_a_tube_in_two_workspaces_is_taken_from_the_later(wsp, tmp_path):
    first, second = _copy(wsp, tmp_path / "a" / "first.wsp"), _copy(wsp, tmp_path / "b" / "second.wsp")
    idx = index_reviews([first, second], SHEET)
    assert {r.workspace for rs in idx.by_sample.values() for r in rs} == {str(second)}
    assert len(idx.problems) == 2
    for key, problem in zip((f"{BM}.ngf1", f"{PB}.nk"), idx.problems):
        assert f"tube {key} is in review workspaces {first} and {second}: the later one is used" == problem
    idx = index_reviews([second, first], SHEET)
    assert {r.workspace for rs in idx.by_sample.values() for r in rs} == {str(first)}


def test_a_tube_twice_in_one_workspace_is_a_problem(wsp, tmp_path):
    # FlowJo's name for the NGF file differs from its DataSet file: both samples are the NGF tube
    ws = edited(wsp, tmp_path / "twice.wsp", _rename_sample(NK_NAME, "PT01_BM_BASELINE_ngf1", "x.fcs"))
    idx = index_reviews([ws], SHEET)
    (problem,) = idx.problems
    assert f"tube {BM}.ngf1 is both sample '{NGF_NAME}' and 'PT01_BM_BASELINE_ngf1'" in problem
    assert idx.of(BM)[0].ws_sample == "PT01_BM_BASELINE_ngf1"


def test_a_sample_whose_tubes_are_in_two_workspaces(wsp, tmp_path):
    ngf2 = hand_tube(BM, "ngf2", "PT01/PT01_BM_baseline_ngf2.fcs", panel="ngf_tube2")
    other = edited(wsp, tmp_path / "ngf2.wsp", keep_samples(NK_NAME),
                   _rename_sample(NK_NAME, "PT01_BM_baseline_ngf2.fcs", "PT01_BM_baseline_ngf2.fcs"))
    idx = index_reviews([wsp, other], [ngf2, NGF_TUBE])
    assert [r.tube for r in idx.of(BM)] == ["ngf2", "ngf1"]  # sheet order
    assert idx.workspaces_of(BM) == [str(other), str(wsp)]
    assert len(idx.problems) == 1 and f"'{NK_NAME}'" in idx.problems[0]  # the NK tube is not in this sheet


# ---- which samples are redone -----------------------------------------------------------------

def test_samples_as_exported_are_not_redone(wsp, tmp_path):
    reviewed = _copy(wsp, tmp_path / "reviewed.wsp")
    idx = index_reviews([reviewed], SHEET, export_of=lambda t: str(wsp))
    assert dict(idx.by_sample) == {} and idx.problems == ()
    assert idx.unchanged == (BM, PB)
    assert idx.workspaces_of(BM) == []
    # the export itself named as the reviewed workspace
    idx = index_reviews([wsp], SHEET, export_of=lambda t: str(wsp))
    assert dict(idx.by_sample) == {} and idx.unchanged == (BM, PB)


def test_flagged_samples_are_redone_even_as_exported(wsp, tmp_path):
    reviewed = _copy(wsp, tmp_path / "reviewed.wsp")
    asked: list[str] = []

    def flagged(sample: str) -> bool:
        asked.append(sample)
        return sample == PB

    idx = index_reviews([reviewed], SHEET, export_of=lambda t: str(wsp), flagged=flagged)
    assert list(idx.by_sample) == [PB] and idx.unchanged == (BM,)
    assert PB in asked and set(asked) <= {BM, PB}


def test_a_moved_gate_redoes_its_sample_only(wsp, tmp_path):
    reviewed = edited(wsp, tmp_path / "moved.wsp", scale_bound(NGF_NAME, "PC", "FITC-A", 4.0))
    exports: list[str] = []

    def export_of(t):
        exports.append(t.key)
        return str(wsp)

    idx = index_reviews([reviewed], SHEET, export_of=export_of, flagged=lambda s: False)
    assert list(idx.by_sample) == [BM] and idx.unchanged == (PB,)
    assert idx.of(BM) == (ReviewedTube(BM, "ngf1", NGF1, str(reviewed), NGF_NAME),)
    assert sorted(exports) == [f"{BM}.ngf1", f"{PB}.nk"]  # asked for the tubes the workspace holds only


def test_without_an_export_to_compare_with_the_sample_is_redone(wsp, tmp_path):
    reviewed = _copy(wsp, tmp_path / "reviewed.wsp")
    truncated = tmp_path / "truncated_export.wsp"
    truncated.write_bytes(wsp.read_bytes()[:1000])
    exports = {NGF1: None, NK: str(tmp_path / "never_written.wsp")}
    idx = index_reviews([reviewed], SHEET, export_of=lambda t: exports[t.fcs])
    assert sorted(idx.by_sample) == [BM, PB] and idx.unchanged == ()
    idx = index_reviews([reviewed], SHEET, export_of=lambda t: str(truncated))
    assert sorted(idx.by_sample) == [BM, PB] and idx.problems == ()
    # an export that does not hold the tube
    other = edited(wsp, tmp_path / "nk_only.wsp", keep_samples(NK_NAME))
    idx = index_reviews([reviewed], SHEET, export_of=lambda t: str(other))
    assert list(idx.by_sample) == [BM] and idx.unchanged == (PB,)


def test_a_sample_renamed_by_the_reviewer_is_compared_under_its_new_name(wsp, tmp_path):
    reviewed = edited(wsp, tmp_path / "renamed.wsp", _rename_sample(NGF_NAME, "PT01_BM_baseline_ngf1"))
    idx = index_reviews([reviewed], SHEET, export_of=lambda t: str(wsp))
    assert dict(idx.by_sample) == {} and idx.unchanged == (BM, PB)


# ---- gate digests ---------------------------------------------------------------------------

def _digest_change(wsp: Path, tmp_path: Path, *edits) -> dict[str, bool]:
    """Per sample: whether the edits changed its digest."""
    before = gate_digests(wsp)
    after = gate_digests(edited(wsp, tmp_path / "edited.wsp", *edits))
    assert after.keys() == before.keys()
    return {name: after[name] != before[name] for name in before}


def test_digests_are_per_sample(wsp):
    d = gate_digests(wsp)
    assert sorted(d) == sorted([NGF_NAME, NK_NAME])
    assert d[NGF_NAME] != d[NK_NAME] and all(len(v) == 64 for v in d.values())
    assert gate_digests(str(wsp)) == d


def test_a_moved_bound_changes_its_sample_only(wsp, tmp_path):
    assert _digest_change(wsp, tmp_path, scale_bound(NGF_NAME, "PC", "FITC-A", 1.001)) == {NGF_NAME: True,
                                                                                             NK_NAME: False}
    assert _digest_change(wsp, tmp_path, scale_bound(NK_NAME, "NKG2Apos", "PE-A", 0.99)) == {NGF_NAME: False,
                                                                                               NK_NAME: True}


def test_a_bound_set_where_there_was_none_changes_the_digest(wsp, tmp_path):
    def close_pc(root):
        dimension(node(sample_el(root, NGF_NAME), "PC"), "FITC-A").set(f"{{{G}}}max", "200000")
    assert _digest_change(wsp, tmp_path, close_pc)[NGF_NAME]


def test_a_moved_polygon_vertex_changes_the_digest(wsp, tmp_path):
    def move(root):
        coord = node(sample_el(root, NGF_NAME), "Singlets").find("Gate").iter(f"{{{G}}}coordinate")
        c = list(coord)[4]
        c.set(f"{{{D}}}value", repr(float(c.get(f"{{{D}}}value")) + 100.0))
    assert _digest_change(wsp, tmp_path, move) == {NGF_NAME: True, NK_NAME: False}


def test_changed_boolean_operands_change_the_digest(wsp, tmp_path):
    def drop_operand(root):
        deps = node(sample_el(root, NK_NAME), "NK").find("Dependents")
        deps.remove(deps[-1])
    assert _digest_change(wsp, tmp_path, drop_operand) == {NGF_NAME: False, NK_NAME: True}

    def and_not_or(root):
        node(sample_el(root, NK_NAME), "NK").tag = "AndNode"
    assert _digest_change(wsp, tmp_path, and_not_or) == {NGF_NAME: False, NK_NAME: True}


def test_a_renamed_gate_changes_the_digest(wsp, tmp_path):
    assert _digest_change(wsp, tmp_path, rename(NGF_NAME, "MastCells", "Mast cells"))[NGF_NAME]


def test_a_changed_spillover_changes_its_sample_only(wsp, tmp_path):
    def spill(root):
        coef = sample_el(root, NGF_NAME).find(f"{{{T}}}spilloverMatrix").find(f"{{{T}}}spillover").findall(
            f"{{{T}}}coefficient")[1]
        coef.set(f"{{{T}}}value", "0.17")
    assert _digest_change(wsp, tmp_path, spill) == {NGF_NAME: True, NK_NAME: False}


def test_a_changed_transform_changes_its_sample_only(wsp, tmp_path):
    def wider(root):
        for xf in sample_el(root, NK_NAME).find("Transformations"):
            if xf.find(f"{{{D}}}parameter").get(f"{{{D}}}name") == "Comp-PE-A":
                xf.set(f"{{{T}}}W", "0.75")
    assert _digest_change(wsp, tmp_path, wider) == {NGF_NAME: False, NK_NAME: True}

    def linear(root):  # another kind of transform on a channel
        for xf in sample_el(root, NGF_NAME).find("Transformations"):
            if xf.find(f"{{{D}}}parameter").get(f"{{{D}}}name") == "FSC-H":
                xf.set(f"{{{T}}}maxRange", "131072.0")
    assert _digest_change(wsp, tmp_path, linear) == {NGF_NAME: True, NK_NAME: False}


def _reformat(root: ET.Element) -> None:
    """Every number of the gates, matrices and transforms written another way ("0.5" -> "5.0e-1")."""
    for el in root.iter():
        for k, v in list(el.attrib.items()):
            if not k.startswith(("{" + G, "{" + D, "{" + T)):
                continue
            try:
                x = float(v)
            except ValueError:
                continue
            el.set(k, f"{x:.16e}".replace("e+0", "e").replace("e-0", "e-"))


def test_reformatted_numbers_keep_the_digest(wsp, tmp_path):
    ws = edited(wsp, tmp_path / "reformatted.wsp", _reformat)
    text = ws.read_text()
    assert 'transforms:W="5.0000000000000000e-1"' in text and 'transforms:value="1.0000000000000000e0"' in text
    assert gate_digests(ws) == gate_digests(wsp)
    idx = index_reviews([ws], SHEET, export_of=lambda t: str(wsp))
    assert dict(idx.by_sample) == {} and idx.unchanged == (BM, PB)


def test_ids_colours_and_order_keep_the_digest(wsp, tmp_path):
    def volatile(root):
        for el in root.iter():
            for k in list(el.attrib):
                if k.endswith("}id") or k.endswith("}parent_id"):
                    el.set(k, "X" + el.get(k))
            if el.get("color") is not None:
                el.set("color", "#ff0000")
        subs = node(sample_el(root, NGF_NAME), "Nucleated").find("Subpopulations")
        pops = list(subs)
        for p in pops:
            subs.remove(p)
        for p in reversed(pops):
            subs.append(p)
        samples = root.find("SampleList")
        first = samples[0]
        samples.remove(first)
        samples.append(first)
    assert _digest_change(wsp, tmp_path, volatile) == {NGF_NAME: False, NK_NAME: False}


def test_an_unreadable_file_raises(wsp, tmp_path):
    bad = tmp_path / "truncated.wsp"
    bad.write_bytes(wsp.read_bytes()[:2000])
    with pytest.raises(ET.ParseError):
        gate_digests(bad)
