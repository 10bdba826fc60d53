"""A sample gated again with a reviewer's gates, without Snakemake (mrdflow.review.export_batch,
mrdflow.review.review_sample): one simulated marrow (NGF tubes 1 and 2; tube 1 with a clog, so its
time QC gate is a FlowJo NOT node and its QC record has segments) analysed from its data, its NGF
tube 1 exported, the PC gate's CD38 cut raised in the XML, and the sample gated again."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from review.review_cohort import (
    ALL,
    edited,
    rename,
    review_config,
    sample_settings,
    scale_bound,
    sheet_rows,
    simulate,
    uncompensated,
)

from mrdflow.config import read_samples
from mrdflow.errors import MrdflowError
from mrdflow.review import ReviewedTube, compare_gates, export_batch, review_batches, review_sample
from mrdflow.review._apply import _KEPT_QC
from mrdflow.sample import analyse_sample

SAMPLE = "PT01_BM_baseline"
NGF1_NAME = "PT01_BM_baseline_ngf1.fcs"
REPO = Path(__file__).resolve().parents[2]


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _counts(path: Path, tube: str) -> dict[str, int]:
    return {r["population"]: int(r["count"]) for r in _tsv(path) if r["tube"] == tube}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The sample analysed from its data, exported, reviewed (PC's CD38 cut x4 in channel values)
    and gated again in memory."""
    root = tmp_path_factory.mktemp("review_apply")
    data = simulate(sheet_rows(sample_ids=[SAMPLE]), root / "data", clogs={"PT01_BM_baseline_ngf1": {
        "start": 0.4, "length": 0.1}})
    cfg = review_config()
    settings = sample_settings(cfg)
    sheet = read_samples(REPO / "config" / "test" / "samples.tsv")
    tubes = [t for t in sheet if t.sample_id == SAMPLE]
    sample_dir = root / "results" / "samples" / SAMPLE
    analyse_sample(SAMPLE, tubes, data, settings, sample_dir)
    batch = review_batches(sheet, {"marrow1": {"panels": ["ngf_tube1"], "samples": [SAMPLE]}}, cfg["panels"])["marrow1"]
    export = export_batch(batch, data, settings, root / "results" / "review" / "marrow1.wsp", results_root=root)
    reviewed = edited(export, root / "reviewed" / "marrow1.wsp", scale_bound(NGF1_NAME, "PC", "FITC-A", 4.0))
    rt = ReviewedTube(SAMPLE, "ngf1", tubes[0].fcs, str(reviewed), NGF1_NAME)
    record = review_sample(SAMPLE, tubes, data, settings, [rt], sample_dir)
    return SimpleNamespace(root=root, data=data, settings=settings, tubes=tubes, sample_dir=sample_dir, batch=batch,
                           export=export, reviewed=reviewed, rt=rt, record=record,
                           data_record=json.loads((sample_dir / "stage1.json").read_text()))


def _fresh_copy(loop, where: Path) -> Path:
    """The sample's data-driven folder (no reviewed/) copied to ``where``."""
    shutil.copytree(loop.sample_dir, where, ignore=shutil.ignore_patterns("reviewed"))
    return where


# ---- export ------------------------------------------------------------------------------------

def test_the_export_holds_the_batch_with_the_pipeline_gates(loop):
    import flowkit as fk

    from mrdflow.gating import template_from_workspace, workspace_samples

    assert [s.name for s in workspace_samples(loop.export, "marrow1")] == [NGF1_NAME]
    assert [s.name for s in workspace_samples(loop.export, ALL)] == [NGF1_NAME]
    ngf1 = loop.tubes[0]
    data = fk.parse_gating_xml(str(loop.sample_dir / loop.data_record["gates_of"]["ngf1"]))
    back = template_from_workspace(loop.export, ALL, "ngf_tube1", loop.data / ngf1.fcs).strategy
    assert compare_gates(data, back, where="export", tube="ngf1") == []
    assert ("TimeOK_bad1", ("root",)) in back.get_gate_ids()  # the clog: TimeOK = NOT TimeOK_bad1


def test_a_batch_none_of_whose_tubes_was_gated_is_an_error(loop, tmp_path):
    folder = tmp_path / "results" / "samples" / SAMPLE
    folder.mkdir(parents=True)
    (folder / "stage1.json").write_text(json.dumps({"gates_of": {}, "errors": [{"tube": "ngf1", "error": "x"}]}))
    with pytest.raises(MrdflowError, match=r"review batch 'marrow1': none of its 1 tubes was gated"):
        export_batch(loop.batch, loop.data, loop.settings, tmp_path / "out.wsp", results_root=tmp_path)
    assert not (tmp_path / "out.wsp").exists()


# ---- the reviewed record ----------------------------------------------------------------------

def test_the_moved_gate_is_recorded_with_both_counts(loop):
    review = loop.record["review"]
    (change,) = review["changes"]
    assert (change["tube"], change["gate"], change["path"], change["change"]) == (
        "ngf1", "PC", "TimeOK/Singlets/Nucleated/PC", "moved")
    data_counts = _counts(loop.sample_dir / "gating.tsv", "ngf1")
    reviewed_counts = _counts(loop.sample_dir / "reviewed" / "gating.tsv", "ngf1")
    assert change["count_data"] == data_counts["PC"]
    assert change["count_reviewed"] == reviewed_counts["PC"]
    assert 0 < change["count_reviewed"] < change["count_data"]  # a higher CD38 cut keeps fewer
    lo_data, lo_reviewed = change["data"]["CD38 (FITC-A)"][0], change["reviewed"]["CD38 (FITC-A)"][0]
    assert lo_reviewed > lo_data
    assert change["data"]["CD138 (BV421-A)"] == pytest.approx(change["reviewed"]["CD138 (BV421-A)"])
    assert review["problems"] == [] and review["data_stage1"] == "stage1.json"


def test_the_gates_not_moved_count_what_the_data_driven_gates_counted(loop):
    data = _tsv(loop.sample_dir / "gating.tsv")
    reviewed = _tsv(loop.sample_dir / "reviewed" / "gating.tsv")
    key = [(r["tube"], r["population"]) for r in data]
    assert [(r["tube"], r["population"]) for r in reviewed] == key
    for before, after in zip(data, reviewed, strict=True):
        if (before["tube"], before["population"]) != ("ngf1", "PC"):
            assert after["count"] == before["count"], before
    assert _counts(loop.sample_dir / "gating.tsv", "ngf1")["TimeOK_bad1"] > 0


def test_the_reviewed_tube_is_marked_and_the_others_are_not(loop):
    record = loop.record
    assert record["tubes"]["ngf1"]["gating_source"] == "reviewed"
    assert record["tubes"]["ngf2"]["gating_source"] == "data"
    assert record["gating_source"] == "reviewed"
    written = json.loads((loop.sample_dir / "reviewed" / "stage1.json").read_text())
    assert written["review"] == json.loads(json.dumps(record["review"]))
    assert written["gating_source"] == "reviewed"
    # the data-driven record stays where it was, as it was
    assert loop.data_record["gating_source"] == "data" and "review" not in loop.data_record
    assert record["pc_events"] == "reviewed/pc_events.npz"
    assert (loop.sample_dir / record["pc_events"]).exists()


def test_time_qc_and_placement_evidence_are_the_data_records(loop):
    before, after = loop.data_record["tubes"]["ngf1"], loop.record["tubes"]["ngf1"]
    assert before["time_segments"] and before["time_removed_pct"] > 0  # the clog
    assert before["gates"]  # placement's evidence
    for key in _KEPT_QC:
        if key in before:
            assert after[key] == before[key], key
    assert after["events"] == before["events"] and after["time_ok"] == before["time_ok"]


def test_the_workspace_is_stamped(loop):
    (stamp,) = loop.record["review"]["workspaces"]
    assert stamp["path"] == str(loop.reviewed) and stamp["tubes"] == ["ngf1"]
    assert stamp["sha256"] == hashlib.sha256(loop.reviewed.read_bytes()).hexdigest()
    assert stamp["mtime"].endswith("+00:00")


def test_the_review_settles_the_flags_and_keeps_hand_made_time_qc(loop, tmp_path):
    """A data-driven record whose NGF tube 1 placement flagged PC, with time QC the static gating
    cannot know: the reviewed record copies the QC, lists the flag as resolved and has no flag left."""
    folder = _fresh_copy(loop, tmp_path / SAMPLE)
    record = json.loads((folder / "stage1.json").read_text())
    flag = {"gate": "PC", "reason": "PC: CD38.min 0.800 on its search window's edge [0.60, 0.80]"}
    hand = {"time_removed_pct": 12.5, "time_segments": [[1.0, 2.0]], "time_reasons": ["by hand"],
            "flow_rate_failed": True, "gates": {"PC": {"CD38.min": {"method": "by hand"}}}, "placement_events": 1234}
    record["tubes"]["ngf1"].update(hand, gate_review=[flag])
    record["review_needed"] = [{"readout": "PC %", "gate": "PC", "tube": "ngf1", "reason": flag["reason"]}]
    (folder / "stage1.json").write_text(json.dumps(record))
    out = review_sample(SAMPLE, loop.tubes, loop.data, loop.settings, [loop.rt], folder)
    q = out["tubes"]["ngf1"]
    assert {k: q[k] for k in hand} == hand
    assert q["gate_review"] == []
    assert out["review"]["resolved"] == [{"tube": "ngf1", **flag}]
    assert out["review_needed"] == []


def test_a_streamed_tube_counts_what_the_in_memory_run_counts(loop, tmp_path):
    folder = _fresh_copy(loop, tmp_path / SAMPLE)
    streamed = dataclasses.replace(loop.settings, placement_events=2000)
    out = review_sample(SAMPLE, loop.tubes, loop.data, streamed, [loop.rt], folder)
    assert out["tubes"]["ngf1"]["events"] == 20000 > streamed.placement_events
    assert out["tubes"]["ngf1"]["placement_events"] == 2000  # it was streamed
    assert _counts(folder / "reviewed" / "gating.tsv", "ngf1") == _counts(loop.sample_dir / "reviewed" / "gating.tsv",
                                                                          "ngf1")
    assert out["review"]["changes"] == loop.record["review"]["changes"]
    assert out["counts"]["ngf1"] == loop.record["counts"]["ngf1"]


def test_a_workspace_that_cannot_be_used_leaves_the_data_driven_gates(loop, tmp_path):
    folder = _fresh_copy(loop, tmp_path / SAMPLE)
    bad = edited(loop.reviewed, tmp_path / "renamed.wsp", rename(NGF1_NAME, "PC", "Plasma cells"))
    reviewed = [
        dataclasses.replace(loop.rt, workspace=str(bad)),
        ReviewedTube(SAMPLE, "ngf2", loop.tubes[1].fcs, str(tmp_path / "gone.wsp"), "PT01_BM_baseline_ngf2.fcs"),
        ReviewedTube(SAMPLE, "ngf9", "PT01/PT01_BM_baseline_ngf9.fcs", str(loop.reviewed), "x.fcs"),
    ]
    out = review_sample(SAMPLE, loop.tubes, loop.data, loop.settings, reviewed, folder)
    problems = {p["tube"]: p["error"] for p in out["review"]["problems"]}
    assert sorted(problems) == ["ngf1", "ngf2", "ngf9"]
    assert str(bad) in problems["ngf1"] and "'PC'" in problems["ngf1"] and "Plasma cells" in problems["ngf1"]
    assert "gone.wsp" in problems["ngf2"]
    assert "'ngf9'" in problems["ngf9"] and SAMPLE in problems["ngf9"]
    assert out["review"]["changes"] == [] and out["review"]["workspaces"] == []
    assert {t: q["gating_source"] for t, q in out["tubes"].items()} == {"ngf1": "data", "ngf2": "data"}
    assert out["gating_source"] == "data"
    assert _tsv(folder / "reviewed" / "gating.tsv") == _tsv(loop.sample_dir / "gating.tsv")


def test_an_uncompensated_workspace_is_a_problem(loop, tmp_path):
    folder = _fresh_copy(loop, tmp_path / SAMPLE)
    bad = edited(loop.export, tmp_path / "uncompensated.wsp", uncompensated(NGF1_NAME))
    out = review_sample(SAMPLE, loop.tubes, loop.data, loop.settings,
                        [dataclasses.replace(loop.rt, workspace=str(bad))], folder)
    assert [p["tube"] for p in out["review"]["problems"]] == ["ngf1"]
    assert out["tubes"]["ngf1"]["gating_source"] == "data"
