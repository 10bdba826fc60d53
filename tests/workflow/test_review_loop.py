"""The FlowJo review loop on the tiny cohort, end to end through Snakemake.

Export the batches (``snakemake review``); move one PC gate and one NKG2A gate in the XML, as a
reviewer would in FlowJo; name the saved workspaces in ``review.workspaces`` and run again. Only
those two samples and the cohort are redone, their read-outs are what FlowKit counts in the moved
gates, and the audit lists both changes. Then bad workspaces (a renamed gate, another
compensation, another transform, a sample not in the sheet, a truncated file): each is named in
``results/review/problems.tsv``, its sample keeps its data-driven gates and the cohort goes on.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.workflow
G = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
D = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"
T = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
for _p, _u in (("gating", G), ("data-type", D), ("transforms", T)):
    ET.register_namespace(_p, _u)

PC_SAMPLE, NK_SAMPLE = "PT01_BM_baseline", "PT01_PB_baseline_nk"
PC_FCS, NK_FCS = "PT01_BM_baseline_ngf1.fcs", "PT01_PB_baseline_nk.fcs"


def _snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _config(work: Path, workspaces: list[str]) -> Path:
    text = (REPO / "config" / "test" / "config.yaml").read_text()
    path = work / f"review_{len(workspaces)}.yaml"
    path.write_text(text + "\nreview:\n  workspaces: [" + ", ".join(workspaces) + "]\n")
    return path


def _sample(root: ET.Element, name: str) -> ET.Element:
    return next(s for s in root.findall("SampleList/Sample") if s.find("SampleNode").get("name") == name)


def _population(sample: ET.Element, name: str) -> ET.Element:
    return next(p for p in sample.iter("Population") if p.get("name") == name)


def _dimension(pop: ET.Element, channel: str) -> ET.Element:
    for d in pop.find("Gate").iter(f"{{{G}}}dimension"):
        label = d.find(f"{{{D}}}fcs-dimension").get(f"{{{D}}}name")
        if label in (channel, "Comp-" + channel):
            return d
    raise AssertionError(f"{pop.get('name')}: no dimension {channel}")


def _move_min(src: Path, dst: Path, sample: str, gate: str, channel: str, factor: float) -> None:
    """What a reviewer does in FlowJo: drag one bound of one sample's gate (channel values)."""
    tree = ET.parse(src)
    dim = _dimension(_population(_sample(tree.getroot(), sample), gate), channel)
    dim.set(f"{{{G}}}min", repr(float(dim.get(f"{{{G}}}min")) * factor))
    tree.write(dst, encoding="UTF-8", xml_declaration=True)


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _jobs(stdout: str) -> dict[str, list[str]]:
    """rule -> the sample wildcards of its jobs in a dry run's listing."""
    out: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=rule |localrule )", stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if m:
            w = re.search(r"wildcards: .*?sample=([^,\s]+)", block)
            out.setdefault(m.group(1), []).append(w.group(1) if w else "")
    return out


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    work = tmp_path_factory.mktemp("review")
    base = REPO / "config" / "test" / "config.yaml"
    r = _snakemake(work, base, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    r = _snakemake(work, base, "--cores", "2", "review")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    before = {s: json.loads((work / "results" / "samples" / s / "metrics.json").read_text())
              for s in (PC_SAMPLE, NK_SAMPLE, "PT01_BM_week4", "PT08_BM_baseline", "PT08_BM_week4")}
    (work / "reviewed").mkdir()
    # Raise the CD38 cut of one PC gate and the NKG2A cut of one NK tube (channel values x4, x3).
    _move_min(work / "results/review/ngf_tube1.wsp", work / "reviewed/ngf_tube1.wsp", PC_FCS, "PC", "FITC-A", 4.0)
    _move_min(work / "results/review/pb_nk.wsp", work / "reviewed/pb_nk.wsp", NK_FCS, "NKG2Apos", "PE-A", 3.0)
    config = _config(work, ["reviewed/ngf_tube1.wsp", "reviewed/pb_nk.wsp"])
    dry = _snakemake(work, config, "-n", "--cores", "1")
    assert dry.returncode == 0, dry.stderr[-3000:]
    r = _snakemake(work, config, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work, config, before, _jobs(dry.stdout + dry.stderr)


def test_only_the_reviewed_samples_and_the_cohort_are_redone(loop):
    work, config, _, jobs = loop
    assert sorted(jobs["review_sample"]) == sorted([PC_SAMPLE, NK_SAMPLE])
    assert sorted(jobs["finish_sample"]) == sorted([PC_SAMPLE, NK_SAMPLE])
    assert "analyse_sample" not in jobs and "fit_pc_model" not in jobs and "simulate_cohort" not in jobs
    assert {"cohort_tables", "report", "review_changes"} <= set(jobs)
    again = _snakemake(work, config, "-n", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr


def _flowkit_counts(wsp: Path, fcs: Path) -> dict[tuple[str, ...], int]:
    """Events per gate path, FlowKit applying the workspace to the file (independent of mrdflow)."""
    import warnings

    import flowkit as fk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = fk.Workspace(str(wsp), fcs_samples=[str(fcs)])
        ws.analyze_samples(sample_id=fcs.name, use_mp=False)
        report = ws.get_gating_results(fcs.name).report
    return {(*path, name): int(n) for path, name, n in zip(report["gate_path"], report["gate_name"], report["count"],
                                                           strict=True)}


def _count(counts: dict, gate: str) -> int:
    (n,) = [v for k, v in counts.items() if k[-1] == gate]
    return n


def test_changed_readouts_are_what_flowkit_counts_in_the_moved_gates(loop):
    work, _, before, _ = loop
    data = work / "data" / "test" / "PT01"
    pc = json.loads((work / "results/samples" / PC_SAMPLE / "metrics.json").read_text())
    fk1 = _flowkit_counts(work / "reviewed/ngf_tube1.wsp", data / PC_FCS)
    tube2 = {r["population"]: int(r["count"]) for r in _tsv(work / "results/samples" / PC_SAMPLE / "gating.tsv")
             if r["tube"] == "ngf2"}
    assert pc["pc"]["n_pc"] == _count(fk1, "PC") + tube2["PC"]
    assert pc["pc"]["n_nucleated"] == _count(fk1, "Nucleated") + tube2["Nucleated"]
    assert pc["pc"]["n_pc"] < before[PC_SAMPLE]["pc"]["n_pc"]  # the raised CD38 cut keeps fewer
    nk = json.loads((work / "results/samples" / NK_SAMPLE / "metrics.json").read_text())
    fk2 = _flowkit_counts(work / "reviewed/pb_nk.wsp", data / NK_FCS)
    assert nk["nk"]["nkg2a_pos_count"] == _count(fk2, "NKG2Apos")
    assert nk["nk"]["nkg2a_pct"] == pytest.approx(100.0 * _count(fk2, "NKG2Apos") / _count(fk2, "NK"))
    assert nk["nk"]["nkg2a_pct"] < before[NK_SAMPLE]["nk"]["nkg2a_pct"]
    for m in (pc, nk):
        assert m["gating_source"] == "reviewed" and m["review"]["state"] == "reviewed"
        assert m["review"]["readouts_after"] != m["review"]["readouts_before"]
    assert pc["review"]["readouts_before"]["PC %"] == pytest.approx(before[PC_SAMPLE]["pc"]["pc_pct"])
    assert pc["review"]["readouts_after"]["PC %"] == pytest.approx(pc["pc"]["pc_pct"])
    # the other samples are untouched
    week4 = json.loads((work / "results/samples/PT01_BM_week4/metrics.json").read_text())
    assert week4 == before["PT01_BM_week4"] and week4["review"]["state"] in ("not_needed", "needed")


def test_the_audit_lists_both_changes(loop):
    work, _, _, _ = loop
    rows = _tsv(work / "results/review/changes.tsv")
    assert sorted((r["sample_id"], r["gate"]) for r in rows) == sorted([(NK_SAMPLE, "NKG2Apos"), (PC_SAMPLE, "PC")])
    for r in rows:
        assert r["change"] == "moved" and r["data_coordinates"] != r["reviewed_coordinates"]
        assert r["workspace"].startswith("reviewed/") and len(r["workspace_sha256"]) == 64 and r["workspace_mtime"]
        assert r["readouts_before"] and r["readouts_after"] and r["readouts_before"] != r["readouts_after"]
        assert int(r["count_reviewed"]) < int(r["count_data"])
    pc = next(r for r in rows if r["gate"] == "PC")
    assert "CD38 (FITC-A)" in pc["data_coordinates"]
    metrics = json.loads((work / "results/samples" / PC_SAMPLE / "metrics.json").read_text())
    (change,) = metrics["review"]["changes"]
    lo_data, lo_rev = change["data"]["CD38 (FITC-A)"][0], change["reviewed"]["CD38 (FITC-A)"][0]
    assert lo_rev > lo_data  # raised, on the logicle gate scale
    report = (work / "results/report.html").read_text()
    assert "Review" in report and PC_SAMPLE in report


def _keep(tree: ET.ElementTree, names: set[str]) -> ET.Element:
    """The workspace with only the samples named (and their group references)."""
    from review.review_cohort import keep_samples

    root = tree.getroot()
    keep_samples(*names)(root)
    return root


def _bad_workspaces(work: Path) -> list[str]:
    """Copies of exports spoiled sample by sample (none holding an already reviewed tube), and a
    truncated file."""
    tree = ET.parse(work / "results/review/ngf_tube1.wsp")
    root = _keep(tree, {"PT01_BM_week4_ngf1.fcs", "PT08_BM_baseline_ngf1.fcs", "PT08_BM_week4_ngf1.fcs"})
    # a gate renamed by the reviewer
    _population(_sample(root, "PT01_BM_week4_ngf1.fcs"), "PC").set("name", "Plasma cells")
    # another compensation: one spillover value changed
    coef = _sample(root, "PT08_BM_baseline_ngf1.fcs").find(f"{{{T}}}spilloverMatrix").find(
        f"{{{T}}}spillover").findall(f"{{{T}}}coefficient")[1]
    coef.set(f"{{{T}}}value", "0.3")
    # another transform on the PC gate's CD38 channel
    for xf in _sample(root, "PT08_BM_week4_ngf1.fcs").find("Transformations"):
        if xf.find(f"{{{D}}}parameter").get(f"{{{D}}}name") in ("FITC-A", "Comp-FITC-A"):
            xf.set(f"{{{T}}}W", "1.0")
    tree.write(work / "reviewed/bad_ngf1.wsp", encoding="UTF-8", xml_declaration=True)
    # a sample the sheet does not have
    ghost = ET.parse(work / "results/review/pb_nk.wsp")
    _keep(ghost, {"PT08_PB_baseline_nk.fcs"})
    ghost.write(work / "reviewed/ghost.wsp", encoding="UTF-8", xml_declaration=True)
    text = (work / "reviewed/ghost.wsp").read_text()
    (work / "reviewed/ghost.wsp").write_text(text.replace("PT08_PB_baseline_nk.fcs", "ghost_nk.fcs"))
    raw = (work / "results/review/pb_nk.wsp").read_bytes()
    (work / "reviewed/truncated.wsp").write_bytes(raw[: len(raw) // 2])
    return ["reviewed/ngf_tube1.wsp", "reviewed/pb_nk.wsp", "reviewed/bad_ngf1.wsp", "reviewed/ghost.wsp",
            "reviewed/truncated.wsp"]


def test_bad_workspaces_are_named_and_the_cohort_goes_on(loop):
    work, _, before, _ = loop
    kept = (work / "results/samples" / PC_SAMPLE / "reviewed/stage1.json").stat().st_mtime_ns
    config = _config(work, _bad_workspaces(work))
    r = _snakemake(work, config, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    problems = _tsv(work / "results/review/problems.tsv")
    text = "\n".join(f"{p['sample_id']} {p['tube']} {p['problem']}" for p in problems)
    assert "truncated.wsp" in text
    assert "ghost_nk.fcs" in text and "not in the sample sheet" in text
    by_sample = {p["sample_id"]: p["problem"] for p in problems if p["sample_id"]}
    assert "'PC'" in by_sample["PT01_BM_week4"] and "renamed" in by_sample["PT01_BM_week4"]
    assert "compensation" in by_sample["PT08_BM_baseline"]
    assert "transform" in by_sample["PT08_BM_week4"] and "FITC-A" in by_sample["PT08_BM_week4"]
    for s in ("PT01_BM_week4", "PT08_BM_baseline"):
        m = json.loads((work / "results/samples" / s / "metrics.json").read_text())
        assert m["review"]["state"] == "failed" and "bad_ngf1.wsp" in m["review"]["problems"][0]["error"]
        assert m["tubes"]["ngf1"]["gating_source"] == "data"
        assert m["pc"] == before[s]["pc"]  # the data-driven gates stand
    # the good review stands and was not redone
    assert (work / "results/samples" / PC_SAMPLE / "reviewed/stage1.json").stat().st_mtime_ns == kept
    assert len(_tsv(work / "results/review/changes.tsv")) == 2
