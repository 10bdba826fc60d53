"""The whole DAG on the tiny test cohort (config/test), run through Snakemake in a temp folder."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.workflow


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(REPO / "config" / "test" / "config.yaml"), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    r = _snakemake(work, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work


def test_dry_run_lists_rules(tmp_path):
    r = _snakemake(tmp_path, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "simulate_cohort" in r.stdout and "inventory" in r.stdout


def test_typo_in_config_fails_with_key_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "config" / "test" / "config.yaml").read_text().replace("data_dir:", "data_dri:")
    bad.write_text(text)
    r = _snakemake(tmp_path, "-n", "--configfile", str(bad))
    assert r.returncode != 0
    assert "data_dri" in (r.stdout + r.stderr)


def test_inventory_of_tiny_cohort(tiny_run):
    inv = list(csv.DictReader((tiny_run / "results" / "inventory.tsv").open(), delimiter="\t"))
    sheet = list(csv.DictReader((REPO / "config" / "test" / "samples.tsv").open(), delimiter="\t"))
    assert len(inv) == len(sheet)
    assert all(r["status"] == "ok" for r in inv), [r for r in inv if r["status"] != "ok"]
    assert all(r["fcs_version"] == "FCS3.1" and int(r["events"]) > 0 for r in inv)


def test_rerun_is_a_no_op(tiny_run):
    r = _snakemake(tiny_run, "-n", "--cores", "1")
    assert r.returncode == 0
    assert "Nothing to be done" in (r.stdout + r.stderr)


def _tsv(path):
    return list(csv.DictReader(open(path), delimiter="\t"))


def test_contract_outputs_for_every_sample(tiny_run):
    sheet = _tsv(REPO / "config" / "test" / "samples.tsv")
    samples = sorted({r["sample_id"] for r in sheet})
    for s in samples:
        d = tiny_run / "results" / "samples" / s
        for name in ("gating.tsv", "metrics.json", "gates.xml"):
            assert (d / name).is_file(), f"{s}: {name} missing"
        rows = _tsv(d / "gating.tsv")
        assert rows and set(rows[0]) >= {"population", "parent", "count", "pct_parent", "pct_of_total"}
        pngs = list((d / "plots").rglob("*.png"))
        assert pngs, f"{s}: no gating plots"
    table = _tsv(tiny_run / "results" / "cohort" / "sample_metrics.tsv")
    assert sorted(r["sample_id"] for r in table) == samples


def test_mrd_keys_and_calls(tiny_run):
    import json

    for s, expected in (("PT01_BM_week4", "not_evaluable"), ("PT08_BM_week4", "positive")):
        m = json.loads((tiny_run / "results" / "samples" / s / "metrics.json").read_text())
        mrd = m["mrd"]
        for key in ("mrd_status", "mrd_reason", "mrd_level", "n_nucleated", "n_aberrant_pc", "sensitivity",
                    "hemodilution"):
            assert key in mrd, key
        # tiny week-4 files hold ~2x10^5 nucleated cells: 10^-5 is out of reach, so never "negative"
        assert mrd["mrd_status"] == expected, (s, mrd["mrd_reason"])


def test_gates_xml_reapplied_with_flowkit_gives_same_counts(tiny_run):
    """Re-apply each exported gates.xml with FlowKit's own evaluator to the same FCS."""
    import flowkit as fk

    sheet = _tsv(REPO / "config" / "test" / "samples.tsv")
    checked = 0
    for s in ("PT01_BM_baseline", "PT08_PB_baseline_nk", "PT08_PB_I1_D007"):
        d = tiny_run / "results" / "samples" / s
        counts = {(r["tube"], r["population"]): int(r["count"]) for r in _tsv(d / "gating.tsv")}
        tubes = [r for r in sheet if r["sample_id"] == s and r["role"] == "stain"]
        for i, t in enumerate(tubes):
            xml = d / ("gates.xml" if i == 0 else f"gates_{t['tube']}.xml")
            strategy = fk.parse_gating_xml(str(xml))
            sample = fk.Sample(str(tiny_run / "data" / "test" / t["fcs"]), ignore_offset_error=True)
            report = strategy.gate_sample(sample).report
            for _, row in report.iterrows():
                assert counts[(t["tube"], row["gate_name"])] == row["count"], (s, t["tube"], row["gate_name"])
                checked += 1
    assert checked > 20


def test_tiny_cohort_recovers_planted_truth(tiny_run):
    """The same validation as scripts/validate_demo.py, on the tiny cohort with looser bars
    (its tubes are 10-100x smaller than the demo's)."""
    from mrdflow.demo import Bars, format_report, validate

    bars = Bars(pc_abs=1.0, pc_rel=0.1, nkg2a_abs=3.0, aberrant_rel=0.3, aberrant_abs=15, cart_rel=0.2)
    checks = validate(tiny_run / "results", tiny_run / "data" / "test" / "truth.tsv", bars)
    report = format_report(checks)
    assert len(checks) >= 14, report
    assert all(c.passed for c in checks), report
    readouts = {c.readout for c in checks}
    expected = {"PC % of nucleated", "aberrant PC events", "week-4 MRD status", "NKG2A+ % of NK", "CAR-T cells/µL"}
    assert expected <= readouts


def test_cohort_outputs(tiny_run):
    """Patients, Table 1, response summary, associations, Parquet and AnnData on the tiny cohort."""
    import anndata as ad
    import pandas as pd

    cohort = tiny_run / "results" / "cohort"
    patients = _tsv(cohort / "patients.tsv")
    assert [p["patient_id"] for p in patients] == ["PT01", "PT08"]
    by = {p["patient_id"]: p for p in patients}
    assert by["PT01"]["best_response"] == "sCR" and by["PT08"]["best_response"] == "PD"
    assert by["PT01"]["w4_mrd_status"] == "not_evaluable" and by["PT08"]["w4_mrd_status"] == "positive"
    assert float(by["PT01"]["cart_cmax"]) > 10 * float(by["PT08"]["cart_cmax"])  # planted 120 vs 3 cells/µL
    for col in ("baseline_nkg2a_pct", "cart_auc_0_28", "cart_tmax_day", "cart_persistence_day", "w4_sensitivity"):
        assert by["PT01"][col] not in ("", "NA"), col
    overall = _tsv(cohort / "response_summary.tsv")[0]
    assert (overall["group"], overall["n"], overall["orr_n"], overall["cr_n"]) == ("all", "2", "1", "1")
    assoc = _tsv(cohort / "associations.tsv")
    assert assoc and all(int(a["n"]) <= 2 and a["label"] == "exploratory" for a in assoc)
    t1 = _tsv(cohort / "table1.tsv")
    assert any(r["characteristic"].startswith("NKG2A") and r["source"] == "flow" for r in t1)
    assert len(pd.read_parquet(cohort / "patients.parquet")) == 2
    assert len(pd.read_parquet(cohort / "sample_metrics.parquet")) == len(_tsv(cohort / "sample_metrics.tsv"))
    pc = ad.read_h5ad(cohort / "pc_events.h5ad")
    assert pc.n_obs > 100 and {"sample_id", "patient_id", "cluster", "aberrant"} <= set(pc.obs.columns)
    assert set(pc.obs["patient_id"]) == {"PT01", "PT08"}
    nk = ad.read_h5ad(cohort / "nk_events.h5ad")
    assert nk.n_obs > 100 and "CD159a" in list(nk.var_names) and nk.obs["NKG2Apos"].dtype == bool
    for fig in ("swimmer", "kinetics", "over_time", "nkg2a_auc", "mrd"):
        for ext in ("png", "svg"):
            assert (cohort / "plots" / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)


def test_tiny_cohort_summary_recovers_planted_truth(tiny_run):
    """Cohort medians/ranges of PC % and NKG2A % and the week-4 MRD-negative count against the
    tiny cohort's planted truth (the demo's poster check is in scripts/validate_demo.py)."""
    from mrdflow.demo import format_report, validate_cohort

    checks = validate_cohort(tiny_run / "results", tiny_run / "data" / "test" / "truth.tsv", tol_points=1.0)
    report = format_report(checks)
    assert len(checks) == 8, report
    assert all(c.passed for c in checks), report


def test_tiny_cohort_over_time_recovers_planted_truth(tiny_run):
    """The MRD timeline (PT01's day-90 marrow), the NK timeline (NK cells/µL within 10% of the
    planted count at every tube with beads; no count, with the reason, without) and the per-patient
    courses against the tiny cohort's planted truth."""
    from mrdflow.demo import Bars, format_report, validate_timelines

    checks = validate_timelines(tiny_run / "results", tiny_run / "data" / "test" / "truth.tsv", Bars())
    report = format_report(checks)
    assert len(checks) >= 10 and all(c.passed for c in checks), report
    nk = {r["sample_id"]: r for r in _tsv(tiny_run / "results" / "cohort" / "nk_timeline.tsv")}
    assert nk["PT01_PB_I1_D007"]["nk_cells_per_ul"] not in ("", "NA")
    assert "no counting beads" in nk["PT08_PB_baseline_nk"]["nk_count_reason"]
    patients = {r["patient_id"]: r for r in _tsv(tiny_run / "results" / "cohort" / "patients.tsv")}
    assert float(patients["PT01"]["mrd_negative_through_day"]) >= 90


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory):
    """The tiny cohort with ``sample.placement_events`` below its marrow and NK tubes' sizes, so
    those tubes are streamed (gates placed on a 15 000-event sample) through the whole DAG."""
    work = tmp_path_factory.mktemp("streamed")
    override = work / "streamed.yaml"
    override.write_text("sample:\n  min_events: 1000\n  plots: true\n  placement_events: 15000\n")
    r = _snakemake(work, "--cores", "2", "--configfile", str(REPO / "config" / "test" / "config.yaml"), str(override))
    # (both files: a second --configfile replaces the first list; later files override earlier keys)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work


def test_streamed_tubes_through_the_whole_dag(streamed_run):
    """Streamed tubes are marked in stage1.json, every sample is ok, and the cohort still
    recovers the planted truth with the same bars as the in-memory run."""
    import json

    from mrdflow.demo import Bars, format_report, validate, validate_cohort

    streamed = marrows = 0
    for stage1 in sorted((streamed_run / "results" / "samples").glob("*/stage1.json")):
        rec = json.loads(stage1.read_text())
        assert rec["status"] == "ok", (stage1, rec["errors"], rec["review_needed"])
        for tube, q in rec["tubes"].items():
            if q["events"] > 15000:
                assert q["placement_events"] == 15000, (stage1, tube)
                streamed += 1
                if q["panel"].startswith("ngf"):  # the PC gate, placed on every candidate
                    cand = q["placement_candidates"]
                    assert cand["placed_on"] == "sample and candidates", (stage1, tube, cand)
                    assert q["gates"]["PC"] and cand["candidates"] > 0
                    marrows += 1
            else:
                assert "placement_events" not in q and "placement_candidates" not in q
    assert streamed >= 8 and marrows >= 4
    bars = Bars(pc_abs=1.0, pc_rel=0.1, nkg2a_abs=3.0, aberrant_rel=0.3, aberrant_abs=15, cart_rel=0.2)
    checks = validate(streamed_run / "results", streamed_run / "data" / "test" / "truth.tsv", bars)
    assert all(c.passed for c in checks), format_report(checks)
    checks = validate_cohort(streamed_run / "results", streamed_run / "data" / "test" / "truth.tsv", tol_points=1.0)
    assert all(c.passed for c in checks), format_report(checks)


#: Identifiers planted in FCS TEXT (names, hospital numbers, a birth date): none may reach outputs.
PLANTED = {"$SRC": "SMITH^JOHN", "$PATIENT": "Jane Q Public", "$SMNO": "HOSP-0099123", "PATIENT_DOB": "1961-02-03",
           "MRN": "MRN778812"}


def _plant_identifiers(path: Path) -> None:
    """Rewrite an FCS file with the same events and keywords plus the PLANTED ones."""
    from mrdflow.io import read_fcs, write_fcs

    d = read_fcs(path)
    structural = {"$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINDATA", "$ENDDATA", "$BEGINSTEXT", "$ENDSTEXT",
                  "$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT"}
    meta = {k: v for k, v in d.metadata.items() if k.upper() not in structural}
    write_fcs(path, d.channel_values, d.pnn, d.pns, metadata={**meta, **PLANTED})
    assert read_fcs(path).metadata["$SRC"] == "SMITH^JOHN"


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory):
    """The tiny cohort with both NGF tubes of one marrow broken (one truncated, one with a cut TEXT
    segment) and identifiers planted in the TEXT of two good files."""
    work = tmp_path_factory.mktemp("damaged")
    r = _snakemake(work, "--cores", "2", "--until", "simulate_cohort")
    assert r.returncode == 0, r.stderr[-3000:]
    data = work / "data" / "test"
    with open(data / "PT08" / "PT08_BM_baseline_ngf1.fcs", "r+b") as fh:
        fh.truncate(200_000)
    with open(data / "PT08" / "PT08_BM_baseline_ngf2.fcs", "r+b") as fh:
        fh.truncate(100)
    for f in ("PT01/PT01_PB_baseline_nk.fcs", "PT01/PT01_BM_baseline_ngf1.fcs"):
        _plant_identifiers(data / f)
    r = _snakemake(work, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work


def test_one_failed_sample_does_not_stop_the_cohort(damaged_run):
    """The run completes, the broken sample is recorded as failed with each file's reason, the other
    samples and every cohort output are produced, and the report and patients table say what is
    missing."""
    import json

    res = damaged_run / "results"
    inv = {(x["sample_id"], x["tube"]): x for x in _tsv(res / "inventory.tsv")}
    assert inv[("PT08_BM_baseline", "ngf1")]["status"] == "unreadable"
    assert "truncated" in inv[("PT08_BM_baseline", "ngf1")]["error"]
    m = json.loads((res / "samples" / "PT08_BM_baseline" / "metrics.json").read_text())
    assert m["status"] == "failed" and len(m["errors"]) == 2 and "pc" not in m
    others = [x for x in _tsv(res / "cohort" / "sample_metrics.tsv") if x["sample_id"] != "PT08_BM_baseline"]
    assert others and all(x["status"] == "ok" for x in others)
    patients = {p["patient_id"]: p for p in _tsv(res / "cohort" / "patients.tsv")}
    assert patients["PT08"]["baseline_pc_pct"] == "NA"
    assert "baseline PC %: PT08_BM_baseline failed (ngf1:" in patients["PT08"]["missing_readouts"]
    assert patients["PT08"]["w4_mrd_status"] == "positive"  # the week-4 marrow is unaffected
    assert patients["PT01"]["baseline_nkg2a_pct"] not in ("", "NA")  # files with planted keywords analysed
    html = (res / "report.html").read_text()
    qc = html[html.index('id="qc"'):html.index('id="gating"')]
    assert "PT08_BM_baseline" in qc and "truncated" in qc


def test_no_identifier_from_fcs_text_reaches_any_output(damaged_run):
    """TEXT keywords reach outputs only through the config's allow-list: the planted names, hospital
    numbers and birth date appear in no file under results/ or logs/ (text or binary), the FlowJo
    review workspaces included."""
    r = _snakemake(damaged_run, "--cores", "2", "review")
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((damaged_run / "results" / "review").glob("*.wsp"))
    needles = [v.encode() for v in PLANTED.values()]
    checked = 0
    for folder in ("results", "logs"):
        for f in (damaged_run / folder).rglob("*"):
            if f.is_file():
                blob = f.read_bytes()
                hits = [n for n in needles if n in blob]
                assert not hits, f"{f.relative_to(damaged_run)} contains {hits}"
                checked += 1
    assert checked > 100
    # the allow-listed keywords do reach the inventory
    inv = {(x["sample_id"], x["tube"]): x for x in _tsv(damaged_run / "results" / "inventory.tsv")}
    assert "$CYT" in inv[("PT01_PB_baseline_nk", "nk")]["keywords"]


def test_resume_after_losing_a_sample_gives_byte_identical_results(tiny_run):
    """Delete one sample's outputs (as after an interrupted job): Snakemake redoes that sample and
    what depends on it, and every regenerated file is byte-identical to the first run's."""

    d = tiny_run / "results" / "samples" / "PT08_BM_week4"
    before = {p.relative_to(tiny_run): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    before.update({p.relative_to(tiny_run): p.read_bytes() for p in (tiny_run / "results" / "cohort").glob("*.tsv")})
    assert len(before) > 10
    shutil.rmtree(d)
    r = _snakemake(tiny_run, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "analyse_sample" in r.stderr + r.stdout
    for rel, blob in before.items():
        assert (tiny_run / rel).read_bytes() == blob, rel
    r = _snakemake(tiny_run, "-n", "--cores", "1")
    assert "Nothing to be done" in (r.stdout + r.stderr)
