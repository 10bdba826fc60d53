"""The review audit tables (mrdflow.review changes_rows, format_coordinates, write_changes) and the
cohort table's review columns (mrdflow.metrics.flatten_metrics), from hand-made metrics objects."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mrdflow.metrics import flatten_metrics
from mrdflow.review import CHANGES_TSV, PROBLEMS_TSV, REVIEW_DIR, changes_rows, write_changes
from mrdflow.review._changes import CHANGE_COLUMNS, PROBLEM_COLUMNS, format_coordinates

PREFIX = "TimeOK/Singlets/Cells/Viable/CD45pos/Lymphocytes/CD3neg_Dumpneg"
PC_CHANGE = {"tube": "ngf1", "gate": "PC", "path": "TimeOK/Singlets/Nucleated/PC", "change": "moved",
             "data": {"CD38 (FITC-A)": [0.6300914671854115, None], "CD138 (BV421-A)": [0.44036698670970514, None]},
             "reviewed": {"CD38 (FITC-A)": [0.7650976481382542, None], "CD138 (BV421-A)": [0.4403669867097052, None]},
             "count_data": 3325, "count_reviewed": 3166}
SINGLETS_CHANGE = {"tube": "ngf2", "gate": "Singlets", "path": "TimeOK/Singlets", "change": "moved",
                   "data": {"channels": ["FSC-A", "FSC-H"], "vertices": [[0.0, 0.0], [0.9, 0.7], [0.7, 0.7]]},
                   "reviewed": {"channels": ["FSC-A", "FSC-H"], "vertices": [[0.0, 0.0], [0.95, 0.7], [0.7, 0.7]]},
                   "count_data": 19145, "count_reviewed": None}
NK_CHANGE = {"tube": "nk", "gate": "NK", "path": f"{PREFIX}/NK", "change": "redefined",
             "data": {"op": "or", "refs": [f"{PREFIX}/CD56pos", f"{PREFIX}/CD16pos"]},
             "reviewed": {"op": "and", "refs": [f"{PREFIX}/CD56pos", f"not {PREFIX}/CD16pos"]},
             "count_data": 512, "count_reviewed": 40}
WS1 = {"path": "reviewed/ngf_tube1.wsp", "sha256": "a" * 64, "mtime": "2026-11-30T10:00:00+00:00", "tubes": ["ngf1"]}
WS2 = {"path": "reviewed/ngf_tube2.wsp", "sha256": "b" * 64, "mtime": "2026-11-30T11:00:00+00:00", "tubes": ["ngf2"]}


def _metrics(sample_id: str, review: dict | None, **more) -> dict:
    m = {"sample_id": sample_id, "patient_id": sample_id[:4], "specimen": "BM", "visit": "baseline", "day": -5,
         "infusion": 1, "status": "ok", "errors": [], "tubes": {}, "review_needed": [], **more}
    if review is not None:
        m["review"] = review
    return m


PC_SAMPLE = _metrics("PT01_BM_baseline", {
    "state": "reviewed", "workspaces": [WS1, WS2], "changes": [PC_CHANGE, SINGLETS_CHANGE],
    "resolved": [{"tube": "ngf1", "gate": "PC", "reason": "PC: on the edge"}], "problems": [],
    "readouts_before": {"PC %": 16.6250001, "aberrant PCs": 3100, "MRD call": "positive", "MRD level": None},
    "readouts_after": {"PC %": 15.83, "aberrant PCs": 2950, "MRD call": "positive", "MRD level": None},
})
NK_SAMPLE = _metrics("PT08_PB_baseline_nk", {
    "state": "reviewed", "workspaces": [{**WS1, "path": "reviewed/pb_nk.wsp", "tubes": ["nk"]}], "changes": [NK_CHANGE],
    "resolved": [], "problems": [], "readouts_before": {"NKG2A %": 36.7}, "readouts_after": {"NKG2A %": 30.25},
}, visit="week4")
FAILED_SAMPLE = _metrics("PT01_BM_week4", {
    "state": "failed", "workspaces": [], "changes": [], "resolved": [],
    "problems": [{"tube": "ngf1", "error": "review workspace reviewed/bad.wsp, sample 'x.fcs': gate(s) 'PC' ..."},
                 {"tube": "ngf2", "error": "the workspace's compensation differs"}],
    "readouts_before": {}, "readouts_after": {},
})
PLAIN_SAMPLE = _metrics("PT08_BM_week4", None)  # written before review existed
NOT_NEEDED = _metrics("PT08_BM_baseline", {"state": "not_needed"})


# ---- coordinates ----------------------------------------------------------------------------------

def test_a_rectangle_is_one_range_per_channel():
    assert format_coordinates(PC_CHANGE["data"]) == "CD38 (FITC-A) [0.630091, –]; CD138 (BV421-A) [0.440367, –]"
    assert format_coordinates({"SSC-A": [None, 0.12], "CD45 (PerCP-Cy5-5-A)": [0.4, 0.66238649]}) == \
        "SSC-A [–, 0.12]; CD45 (PerCP-Cy5-5-A) [0.4, 0.662386]"
    assert format_coordinates({"Time": [0, 5]}) == "Time [0, 5]"  # integers as they are


def test_a_polygon_is_its_channels_and_vertices():
    assert format_coordinates(SINGLETS_CHANGE["reviewed"]) == "FSC-A × FSC-H: (0, 0) (0.95, 0.7) (0.7, 0.7)"
    assert format_coordinates({"channels": ["CD4 (BV421-A)", "CD8 (FITC-A)"],
                               "vertices": [[0.123456789, 1e-7], [2.5e5, 0.5]]}) == \
        "CD4 (BV421-A) × CD8 (FITC-A): (0.123457, 1e-07) (250000, 0.5)"


def test_a_boolean_is_its_operation_on_its_operands():
    assert format_coordinates(NK_CHANGE["data"]) == f"or({PREFIX}/CD56pos, {PREFIX}/CD16pos)"
    assert format_coordinates(NK_CHANGE["reviewed"]) == f"and({PREFIX}/CD56pos, not {PREFIX}/CD16pos)"
    assert format_coordinates({"op": "not", "refs": ["TimeOK_bad1"]}) == "not(TimeOK_bad1)"


# ---- rows ---------------------------------------------------------------------------------------

def test_one_row_per_changed_gate():
    rows = changes_rows([PC_SAMPLE, PLAIN_SAMPLE, NOT_NEEDED, FAILED_SAMPLE, NK_SAMPLE])
    assert [(r["sample_id"], r["tube"], r["gate"]) for r in rows] == [
        ("PT01_BM_baseline", "ngf1", "PC"), ("PT01_BM_baseline", "ngf2", "Singlets"),
        ("PT08_PB_baseline_nk", "nk", "NK")]
    assert all(list(r) == list(CHANGE_COLUMNS) for r in rows)
    pc, singlets, nk = rows
    assert pc == {
        "sample_id": "PT01_BM_baseline", "patient_id": "PT01", "visit": "baseline", "tube": "ngf1", "gate": "PC",
        "path": "TimeOK/Singlets/Nucleated/PC", "change": "moved",
        "data_coordinates": "CD38 (FITC-A) [0.630091, –]; CD138 (BV421-A) [0.440367, –]",
        "reviewed_coordinates": "CD38 (FITC-A) [0.765098, –]; CD138 (BV421-A) [0.440367, –]",
        "count_data": "3325", "count_reviewed": "3166",
        "readouts_before": "PC % 16.625; aberrant PCs 3100; MRD call positive; MRD level –",
        "readouts_after": "PC % 15.83; aberrant PCs 2950; MRD call positive; MRD level –",
        "workspace": "reviewed/ngf_tube1.wsp", "workspace_sha256": "a" * 64,
        "workspace_mtime": "2026-11-30T10:00:00+00:00",
    }
    # each change names the workspace that holds its tube
    assert (singlets["workspace"], singlets["workspace_sha256"]) == ("reviewed/ngf_tube2.wsp", "b" * 64)
    assert singlets["count_reviewed"] == "–" and singlets["data_coordinates"].startswith("FSC-A × FSC-H: ")
    assert nk["visit"] == "week4" and nk["change"] == "redefined" and nk["reviewed_coordinates"].startswith("and(")
    assert nk["readouts_after"] == "NKG2A % 30.25"


def test_a_change_of_a_tube_in_no_stamped_workspace_has_no_workspace():
    m = _metrics("S", {"state": "reviewed", "workspaces": [WS2], "changes": [PC_CHANGE]})
    (row,) = changes_rows([m])
    assert (row["workspace"], row["workspace_sha256"], row["workspace_mtime"]) == ("", "", "")
    assert row["readouts_before"] == row["readouts_after"] == ""


def test_no_changes_no_rows():
    assert changes_rows([]) == []
    assert changes_rows([PLAIN_SAMPLE, NOT_NEEDED, FAILED_SAMPLE]) == []


# ---- files --------------------------------------------------------------------------------------

def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


def test_paths_are_under_the_review_folder():
    assert REVIEW_DIR == "results/review"
    assert CHANGES_TSV == "results/review/changes.tsv" and PROBLEMS_TSV == "results/review/problems.tsv"


def test_empty_tables_keep_their_header(tmp_path):
    changes, problems = write_changes([PLAIN_SAMPLE, NOT_NEEDED], [], tmp_path / "review")
    assert (changes, problems) == (tmp_path / "review" / "changes.tsv", tmp_path / "review" / "problems.tsv")
    assert changes.read_text() == "\t".join(CHANGE_COLUMNS) + "\n"
    assert problems.read_text() == "\t".join(PROBLEM_COLUMNS) + "\n"


def test_the_tables_hold_every_change_and_problem(tmp_path):
    parse = ["review workspace not used: reviewed/truncated.wsp: not a readable FlowJo workspace",
             "reviewed/ghost.wsp: sample 'ghost_nk.fcs' is not in the sample sheet"]
    changes, problems = write_changes([PC_SAMPLE, FAILED_SAMPLE, NK_SAMPLE], parse, tmp_path)
    header, rows = _read(changes)
    assert header == list(CHANGE_COLUMNS)
    assert rows == changes_rows([PC_SAMPLE, FAILED_SAMPLE, NK_SAMPLE])
    header, rows = _read(problems)
    assert header == list(PROBLEM_COLUMNS)
    assert [(r["sample_id"], r["tube"], r["problem"]) for r in rows] == [
        ("", "", parse[0]), ("", "", parse[1]),
        ("PT01_BM_week4", "ngf1", FAILED_SAMPLE["review"]["problems"][0]["error"]),
        ("PT01_BM_week4", "ngf2", "the workspace's compensation differs")]


def test_writing_again_replaces_the_tables(tmp_path):
    write_changes([PC_SAMPLE], ["a problem"], tmp_path)
    changes, problems = write_changes([NOT_NEEDED], [], tmp_path)
    assert _read(changes)[1] == [] and _read(problems)[1] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changes.tsv", "problems.tsv"]  # no temporary left


# ---- the cohort table's review columns -------------------------------------------------------------

def test_flatten_metrics_has_the_review_columns():
    row = flatten_metrics(PC_SAMPLE)
    assert row["review_state"] == "reviewed"
    assert row["review_changes"] == "ngf1:PC;ngf2:Singlets"
    assert row["review_workspaces"] == "reviewed/ngf_tube1.wsp;reviewed/ngf_tube2.wsp"
    assert row["review_problems"] == ""
    assert row["review_resolved"] == "ngf1:PC"
    # coordinates and read-outs before and after stay in changes.tsv
    assert not [k for k in row if k.startswith(("review_readouts", "review_changes_", "review_workspaces_"))]
    failed = flatten_metrics(FAILED_SAMPLE)
    assert failed["review_state"] == "failed" and failed["review_changes"] == ""
    assert failed["review_problems"] == ("ngf1: review workspace reviewed/bad.wsp, sample 'x.fcs': gate(s) 'PC' ... | "
                                         "ngf2: the workspace's compensation differs")


@pytest.mark.parametrize("metrics, state", [(NOT_NEEDED, "not_needed"), (PLAIN_SAMPLE, None)])
def test_flatten_metrics_without_a_review(metrics, state):
    row = flatten_metrics(metrics)
    assert row.get("review_state") == state
    if state is None:
        assert not [k for k in row if k.startswith("review_") and k != "review_needed"]
    else:
        assert (row["review_changes"], row["review_problems"], row["review_workspaces"]) == ("", "", "")
