"""The self-contained HTML cohort report (mrdflow.cohort) on a small hand-made results tree."""

import dataclasses
import html
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mrdflow.cohort import FIGURES, SECTIONS, ReportInputs, build_report
from mrdflow.cohort._tables import response_summary, table1, write_tsv

SECTION_IDS = [s for s, _ in SECTIONS]
PLANTED = "SMITH^JOHN"

PATIENTS = [
    dict(patient_id="PT01", age=63, sex="M", ig_type="IgG", light_chain="kappa", riss="II", lymphodepletion="full",
         cart_dose_cells=3.0e8, dose_level="3.0×10^8", best_response="sCR", follow_up_months=7.9,
         baseline_pc_pct=20.0, baseline_aberrant_pc_pct=19.2, baseline_nkg2a_pct=19.5, baseline_nkg2a_pct_bright=60.1,
         baseline_nkg2a_pct_dim=15.2, baseline_nk_pct_lymph=14.0, baseline_nk_bright_pct=8.3,
         baseline_nkg2a_median=1.234, baseline_nkg2a_threshold_source="fmo", w4_mrd_status="negative",
         w4_mrd_level=0.0, w4_sensitivity=8.7e-6, w4_mrd_reason="", cart_cmax=120.5, cart_tmax_day=10,
         cart_auc_0_28=1500.0, cart_persistence_day=120, cart_car_pct_cd3_peak=43.8, cart_n_samples=8,
         cart_cmax_i2=None, cart_tmax_day_i2=None, cart_auc_0_28_i2=None, cart_persistence_day_i2=None,
         cart_car_pct_cd3_peak_i2=None, cart_n_samples_i2=None, missing_readouts=""),
    dict(patient_id="PT02", age=55, sex="F", ig_type="IgA", light_chain="lambda", riss="III",
         lymphodepletion="reduced", cart_dose_cells=1.5e8, dose_level="1.5×10^8", best_response="SD",
         follow_up_months=2.1, baseline_pc_pct=31.0, baseline_aberrant_pc_pct=30.4, baseline_nkg2a_pct=31.8,
         baseline_nkg2a_pct_bright=70.0, baseline_nkg2a_pct_dim=28.0, baseline_nk_pct_lymph=18.0,
         baseline_nk_bright_pct=6.1, baseline_nkg2a_median=1.5, baseline_nkg2a_threshold_source="valley",
         w4_mrd_status="positive", w4_mrd_level=1.0e-4, w4_sensitivity=9.1e-6, w4_mrd_reason="",
         cart_cmax=8.2, cart_tmax_day=7, cart_auc_0_28=90.0, cart_persistence_day=21, cart_car_pct_cd3_peak=5.5,
         cart_n_samples=7, cart_cmax_i2=30.0, cart_tmax_day_i2=14, cart_auc_0_28_i2=400.0,
         cart_persistence_day_i2=28, cart_car_pct_cd3_peak_i2=12.0, cart_n_samples_i2=6, missing_readouts=""),
    dict(patient_id="PT03", age=66, sex="F", ig_type="Light chain", light_chain="kappa", riss="II",
         lymphodepletion="full", cart_dose_cells=3.0e8, dose_level="3.0×10^8", best_response="CR",
         follow_up_months=5.6, baseline_pc_pct=0.5, baseline_aberrant_pc_pct=0.4, baseline_nkg2a_pct=None,
         baseline_nkg2a_pct_bright=None, baseline_nkg2a_pct_dim=None, baseline_nk_pct_lymph=None,
         baseline_nk_bright_pct=None, baseline_nkg2a_median=None, baseline_nkg2a_threshold_source=None,
         w4_mrd_status="not_evaluable", w4_mrd_level=None, w4_sensitivity=2.0e-5,
         w4_mrd_reason="sensitivity 2.0e-05 does not reach 10^-5", cart_cmax=60.0, cart_tmax_day=14,
         cart_auc_0_28=800.0, cart_persistence_day=60, cart_car_pct_cd3_peak=20.0, cart_n_samples=8,
         cart_cmax_i2=None, cart_tmax_day_i2=None, cart_auc_0_28_i2=None, cart_persistence_day_i2=None,
         cart_car_pct_cd3_peak_i2=None, cart_n_samples_i2=None,
         missing_readouts="baseline NKG2A %: PT03_PB_baseline_nk failed (nk: DATA segment truncated)"),
]

COURSE = {  # the over-time columns of patients.tsv (mrdflow.cohort._timeline), by patient
    "PT01": dict(mrd_n_assessments=2, mrd_sustained_negative=None,
                 mrd_sustained_reason="follow-up too short: negative since day 28, confirmation due by day 393",
                 mrd_negative_through_day=240, mrd_best_depth=4.5e-6, mrd_best_depth_negative=True,
                 mrd_conversion_day=28, mrd_last_day=240, mrd_last_status="negative", nk_n_samples=3,
                 nk_baseline_cells_per_ul=180.0, nk_recovery_day=28, nk_recovery_level=90.0,
                 nk_recovery_reason="first day ≥ 0.5 × baseline (180.0/µL)", nk_at_cart_peak=35.5,
                 nkg2a_pct_last=41.0, nkg2a_pct_last_day=90, nkg2a_pct_change=21.5, nkg2a_pct_min=19.5,
                 nkg2a_pct_max=41.0),
    "PT02": dict(mrd_n_assessments=1, mrd_sustained_negative=False, mrd_sustained_reason="never MRD-negative",
                 mrd_negative_through_day=None, mrd_best_depth=1.0e-4, mrd_best_depth_negative=False,
                 mrd_conversion_day=None, mrd_last_day=28, mrd_last_status="positive", nk_n_samples=1,
                 nk_baseline_cells_per_ul=None, nk_recovery_day=None, nk_recovery_level=None,
                 nk_recovery_reason="no baseline NK count to set the recovery level", nk_at_cart_peak=None,
                 nkg2a_pct_last=31.8, nkg2a_pct_last_day=-5, nkg2a_pct_change=None, nkg2a_pct_min=31.8,
                 nkg2a_pct_max=31.8),
    "PT03": dict(mrd_n_assessments=0, mrd_sustained_negative=None, mrd_sustained_reason="no evaluable post-infusion "
                 "marrow", mrd_negative_through_day=None, mrd_best_depth=None, mrd_best_depth_negative=None,
                 mrd_conversion_day=None, mrd_last_day=None, mrd_last_status=None, nk_n_samples=0,
                 nk_baseline_cells_per_ul=None, nk_recovery_day=None, nk_recovery_level=None,
                 nk_recovery_reason="no baseline NK count to set the recovery level", nk_at_cart_peak=None,
                 nkg2a_pct_last=None, nkg2a_pct_last_day=None, nkg2a_pct_change=None, nkg2a_pct_min=None,
                 nkg2a_pct_max=None),
}
for _p in PATIENTS:
    _p.update(COURSE[_p["patient_id"]])


def _nk_tube(pid, day, cells, nkg2a, reason=""):
    lo, hi = (None, None) if cells is None else (cells - 30.0, cells + 30.0)
    return dict(patient_id=pid, sample_id=f"{pid}_PB_NK_D{day}", visit="baseline" if day < 0 else "serial", day=day,
                day_since_infusion1=day, infusion=1, nk_cells_per_ul=cells, nk_cells_per_ul_ci95_low=lo,
                nk_cells_per_ul_ci95_high=hi, nk_count_reason=reason, nk_pct_lymph=12.0, nk_bright_pct_of_nk=8.0,
                nk_dim_pct_of_nk=92.0, nk_bright_cells_per_ul=None, nk_dim_cells_per_ul=None, nkg2a_pct=nkg2a,
                nkg2a_pct_bright=60.0, nkg2a_pct_dim=15.0, review="")


NO_BEADS = "no counting beads in the NK tube: NKG2A % only"
NK_TUBES = [_nk_tube("PT01", -5, 180.0, 19.5), _nk_tube("PT01", 28, 95.0, 30.0), _nk_tube("PT01", 90, 210.0, 41.0),
            _nk_tube("PT02", -5, None, 31.8, NO_BEADS)]

ASSOC = [
    dict(x="baseline_nkg2a_pct", y="cart_auc_0_28", test="spearman", n=2, statistic_name="rho", statistic=-1.0,
         p_value=1.0, p_method="exact permutation", effect_name="rho", effect=-1.0, ci_low=-1.0, ci_high=1.0,
         ci_method="bootstrap", n_groups=None, note="", label="exploratory"),
    dict(x="baseline_nkg2a_pct", y="cart_cmax", test="spearman", n=2, statistic_name="rho", statistic=-1.0,
         p_value=1.0, p_method="exact permutation", effect_name="rho", effect=-1.0, ci_low=None, ci_high=None,
         ci_method=None, n_groups=None, note="too few points for a CI", label=None),
    dict(x="baseline_pc_pct", y="responder", test="mann_whitney", n=3, statistic_name="U", statistic=1.0,
         p_value=0.6667, p_method="exact", effect_name="rank-biserial", effect=0.33, ci_low=None, ci_high=None,
         ci_method=None, n_groups=2, note="", label="exploratory"),
]


def _png(path: Path, colour: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1.5, 1.0), dpi=40)
    ax.plot([0, 1, 2], [0, 1, 0], color=colour)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _tsv(rows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(pd.DataFrame(rows), path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    res = root / "results"
    cohort = res / "cohort"
    patients = pd.DataFrame(PATIENTS)
    _tsv(patients, cohort / "patients.tsv")
    write_tsv(table1(patients), cohort / "table1.tsv")
    write_tsv(response_summary(patients), cohort / "response_summary.tsv")
    _tsv(ASSOC, cohort / "associations.tsv")
    _tsv([dict(patient_id="PT01", sample_id="PT01_BM_week4", visit="week4", day=28, day_since_infusion1=28,
               infusion=1, mrd_status="negative", mrd_level=0.0, sensitivity=8.7e-6, n_nucleated=2300000,
               n_aberrant_pc=0, hemodilution=False, reason="", pc_pct=0.8),
          dict(patient_id="PT02", sample_id="PT02_BM_week4", visit="week4", day=28, day_since_infusion1=28,
               infusion=1, mrd_status="positive", mrd_level=1.0e-4, sensitivity=9.1e-6, n_nucleated=2200000,
               n_aberrant_pc=220, hemodilution=False, reason="", pc_pct=1.2),
          dict(patient_id="PT03", sample_id="PT03_BM_week4", visit="week4", day=28, day_since_infusion1=28,
               infusion=1, mrd_status="not_evaluable", mrd_level=None, sensitivity=2.0e-5, n_nucleated=1000000,
               n_aberrant_pc=0, hemodilution=True, reason="sensitivity 2.0e-05 does not reach 10^-5", pc_pct=0.1),
          dict(patient_id="PT01", sample_id="PT01_BM_m8", visit="month8", day=240, day_since_infusion1=240,
               infusion=1, mrd_status="negative", mrd_level=None, sensitivity=4.5e-6, n_nucleated=4400000,
               n_aberrant_pc=0, hemodilution=False, reason="", pc_pct=0.9)],
         cohort / "mrd_timeline.tsv")
    _tsv(NK_TUBES, cohort / "nk_timeline.tsv")
    _tsv([dict(patient_id=p, infusion=1, day=d, sample_id=f"{p}_PB_I1_D{d:03d}", cells_per_ul=c, car_pct_cd3=10.0,
               cells_per_ul_ci95_low=c * 0.9, cells_per_ul_ci95_high=c * 1.1)
          for p in ("PT02", "PT01") for d, c in ((7, 20.0), (0, 0.0))], cohort / "kinetics.tsv")
    _tsv([dict(sample_id="PT01_BM_baseline", patient_id="PT01", specimen="BM", visit="baseline", day=-5, infusion=1,
               status="ok", errors="", time_qc_flags="", cart_time_qc_failed=None, mrd_hemodilution=None),
          dict(sample_id="PT02_PB_I1_D014", patient_id="PT02", specimen="PB", visit="serial", day=14, infusion=1,
               status="ok", errors="", time_qc_flags="cart:1", cart_time_qc_failed=True, mrd_hemodilution=None),
          dict(sample_id="PT03_PB_baseline_nk", patient_id="PT03", specimen="PB", visit="baseline", day=-5,
               infusion=1, status="failed", errors="nk: DATA segment truncated at /srv/site/data/PT03/x.fcs",
               time_qc_flags="", cart_time_qc_failed=None, mrd_hemodilution=None)],
         cohort / "sample_metrics.tsv")
    for stem, colour in (("swimmer", "red"), ("kinetics", "blue"), ("over_time", "orange"),
                         ("mrd", "green")):  # nkg2a_auc is missing
        _png(cohort / "plots" / f"{stem}.png", colour)
    _png(res / "samples" / "PT01_BM_baseline" / "plots" / "ngf1" / "01_Time.png", "black")
    _png(res / "samples" / "PT01_BM_baseline" / "plots" / "ngf1" / "02_Singlets.png", "black")
    inv = [dict(sample_id="PT01_BM_baseline", tube="ngf1", patient_id="PT01", panel="ngf_tube1",
                path="PT01/PT01_BM_baseline_ngf1.fcs", sha256="a" * 64, size_bytes=1234, fcs_version="3.1",
                cytometer="FACSCanto II", events=1000, parameters=12, acquisition_date="2025-01-01", status="ok",
                error="", keywords="$CYT=FACSCanto II", src_keyword=PLANTED),
           dict(sample_id="PT03_PB_baseline_nk", tube="nk", patient_id="PT03", panel="pb_nk",
                path="PT03/PT03_PB_baseline_nk.fcs", sha256="b" * 64, size_bytes=99, fcs_version="", cytometer="",
                events=None, parameters=None, acquisition_date="", status="unreadable",
                error="PT03/PT03_PB_baseline_nk.fcs: DATA segment truncated", keywords="", src_keyword=PLANTED)]
    _tsv(inv, res / "inventory.tsv")
    sheets = root / "sheets"
    sheets.mkdir()
    (sheets / "samples.tsv").write_text("sample_id\tpatient_id\nPT01_BM_baseline\tPT01\n")
    (sheets / "clinical.tsv").write_text("patient_id\tage\nPT01\t63\n")
    config = {"samples": str(sheets / "samples.tsv"), "data_dir": "data/demo", "mrd": {"required_sensitivity": 1e-5},
              "cohort": {"seed": 596}}
    inputs = ReportInputs.under(root, inventory=res / "inventory.tsv", samples=sheets / "samples.tsv",
                                clinical=sheets / "clinical.tsv", plots=sorted((res / "samples").glob("*/plots")))
    kw = dict(config=config)
    out = build_report(inputs, res / "report.html", **kw)
    return {"root": root, "res": res, "out": out, "html": out.read_text(encoding="utf-8"), "kw": kw,
            "inputs": inputs}


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, sid
    return m.group(1)


def test_report_has_every_section_in_order(tree):
    page = tree["html"]
    assert tree["out"].is_file()
    pos = [page.index(f'<section id="{s}">') for s in SECTION_IDS]
    assert pos == sorted(pos)


def test_self_contained(tree):
    page = tree["html"]
    assert page.count("data:image/png;base64,") == 4  # four cohort figures, none of the gating plots
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert 'href="samples/PT01_BM_baseline/plots/ngf1/01_Time.png"' in _section(page, "gating")
    assert "Figure not available" in _section(page, "figures")  # nkg2a_auc.png is missing


def test_summary_numbers_from_tables(tree):
    s = _section(tree["html"], "summary")
    assert "2/3 (66.7%)" in s  # ORR: sCR + CR
    assert "1/2 (50.0%) of 2 evaluable" in s  # MRD: PT03 not evaluable
    assert "20.00 (0.5, 31.0)" in s  # baseline PC % from Table 1
    assert "25.65 (19.5, 31.8)" in s  # NKG2A %, PT03 missing


def test_tables_and_formats(tree):
    page = tree["html"]
    mrd = _section(page, "mrd")
    assert "8.7e-06 (10^-5 reached)" in mrd and "2.0e-05 (10^-5 not reached)" in mrd
    assert "1.0e-04" in mrd and "does not reach" in mrd
    nk = _section(page, "nk")
    assert "31.80" in nk and "valley" in nk
    kin = _section(page, "kinetics")
    assert kin.count("<td>PT02</td>") >= 2 and "400" in kin  # PT02 has a second-infusion row
    assert 'id="fig-kinetics"' in kin
    assert "Table 1" in _section(page, "table1")


def _rows(section: str, heading: str) -> dict[str, list[str]]:
    """The table after ``heading`` in a section: its first cell (patient or sample) -> cells as text."""
    part = section[section.index(heading):]
    table = part[:part.index("</table>")]
    out = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        if cells:
            out.setdefault(cells[0], []).append(cells)
    return out


def test_over_time_section(tree):
    page = tree["html"]
    assert SECTION_IDS.index("over_time") == SECTION_IDS.index("kinetics") + 1
    sec = _section(page, "over_time")
    assert 'id="fig-over_time"' in sec and sec.count("data:image/png;base64,") == 1
    assert "Course by patient" in sec
    # the figure is shown here, and only pointed to under "Figures"
    figs = _section(page, "figures")
    assert 'id="fig-over_time"' not in figs and '<a href="#fig-over_time">Over time</a>' in figs


def test_over_time_mrd_course(tree):
    sec = _section(tree["html"], "over_time")
    rows = _rows(sec, "MRD course per patient")
    assert rows["PT01"] == [["PT01", "2", "not yet", COURSE["PT01"]["mrd_sustained_reason"], "240",
                             "< 4.5e-06 (negative)", "28", "day 240: negative"]]
    assert rows["PT02"] == [["PT02", "1", "no", "never MRD-negative", "NA", "1.0e-04 (positive)", "NA",
                             "day 28: positive"]]
    assert rows["PT03"][0][:4] == ["PT03", "0", "NA", "no evaluable post-infusion marrow"]
    assert "IMWG 2016" in sec and "365 days" in sec


def test_over_time_nk_course(tree):
    sec = _section(tree["html"], "over_time")
    rows = _rows(sec, "NK course per patient")
    assert rows["PT01"] == [["PT01", "3", "180.0", "28", "90.0", "first day ≥ 0.5 × baseline (180.0/µL)",
                             "35.5 (day 10)", "19.5 → 41.0 (day 90)", "+21.5", "19.5–41.0"]]
    assert rows["PT02"] == [["PT02", "1", "NA", "NA", "NA", "no baseline NK count to set the recovery level", "NA",
                             "31.8 → 31.8 (day -5)", "NA", "31.8–31.8"]]
    assert rows["PT03"][0][7] == "NA"  # no NKG2A at all


def test_over_time_timelines(tree):
    sec = _section(tree["html"], "over_time")
    mrd = _rows(sec, "MRD timeline")
    assert [r[1] for r in mrd["PT01"]] == ["PT01_BM_week4", "PT01_BM_m8"]  # by day since infusion 1
    m8 = mrd["PT01"][1]
    assert m8[2:6] == ["month8", "240", "negative", "< LOD"] and m8[6] == "4.5e-06 (10^-5 reached)"
    assert mrd["PT03"][0][-1] == "sensitivity 2.0e-05 does not reach 10^-5"
    nk = _rows(sec, "NK timeline")
    assert [r[3] for r in nk["PT01"]] == ["-5", "28", "90"]
    assert nk["PT01"][0][4] == "180.0 (150.0–210.0)" and nk["PT01"][0][7] == "19.5"
    assert nk["PT02"][0][4] == f"no count: {NO_BEADS}" and nk["PT02"][0][7] == "31.8"
    assert "No NK tube has a count" not in sec


def test_over_time_notes_for_missing_tables_and_columns(tree, tmp_path):
    """A patients table from before the course columns, an NK timeline without counts, no MRD timeline:
    notes, no exception."""
    old = pd.DataFrame(PATIENTS).drop(columns=[c for row in COURSE.values() for c in row])
    _tsv(old, tmp_path / "patients.tsv")
    _tsv([_nk_tube("PT02", -5, None, 31.8, NO_BEADS)], tmp_path / "nk.tsv")
    inputs = dataclasses.replace(tree["inputs"], patients=tmp_path / "patients.tsv", nk=tmp_path / "nk.tsv",
                                 mrd=tmp_path / "gone.tsv")
    page = build_report(inputs, tree["res"] / "report_old.html", **tree["kw"]).read_text(encoding="utf-8")
    sec = _section(page, "over_time")
    assert "has no MRD-course columns" in sec and "has no NK-course columns" in sec
    assert "Not available: gone.tsv was not found." in sec
    assert "No NK tube has a count" in sec and f"no count: {NO_BEADS}" in sec
    _tsv(pd.DataFrame(columns=["patient_id", "sample_id", "day_since_infusion1", "nkg2a_pct"]), tmp_path / "nk0.tsv")
    page = build_report(dataclasses.replace(inputs, nk=tmp_path / "nk0.tsv"), tree["res"] / "report_old.html",
                        **tree["kw"]).read_text(encoding="utf-8")
    assert "No stained NK tubes." in _section(page, "over_time")


def test_associations_show_every_row_with_n(tree):
    a = _section(tree["html"], "associations")
    assert "exploratory" in a.lower()
    rows = re.findall(r"<tr><td>.*?</tr>", a, re.S)
    assert len(rows) == len(ASSOC)
    for r, exp in zip(rows, ASSOC):
        assert f"(n = {exp['n']}" in r


def test_qc_lists_failed_sample_and_missing_readouts(tree):
    qc = _section(tree["html"], "qc")
    assert "PT03_PB_baseline_nk" in qc and "nk: DATA segment truncated at x.fcs" in qc
    assert "PT02_PB_I1_D014" in qc and "cart:1" in qc  # a QC flag
    assert "baseline NKG2A %: PT03_PB_baseline_nk failed" in qc


def test_privacy(tree):
    page = tree["html"]
    assert PLANTED not in page
    assert "/srv/site" not in page
    assert str(tree["root"]) not in page
    prov = _section(page, "provenance")
    assert "PT01/PT01_BM_baseline_ngf1.fcs" in prov and "a" * 64 in prov
    assert "unreadable" in prov and "DATA segment truncated" in prov and 'id="failed-files"' in prov
    assert "$CYT=FACSCanto II" in prov  # the allow-listed keywords column
    assert "samples.tsv" in prov and "snakemake" in prov and "required_sensitivity" in prov


def test_deterministic(tree, tmp_path):
    again = build_report(tree["inputs"], tree["res"] / "report2.html", **tree["kw"])
    assert again.read_bytes() == tree["out"].read_bytes()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium/Chrome on PATH (install chromium to run this test)")
def test_renders_in_headless_chromium(tree, tmp_path):
    exe = _chromium()
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    url = tree["out"].resolve().as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom.stdout
    assert "2/3 (66.7%)" in dom.stdout and "20.00 (0.5, 31.0)" in dom.stdout
    shot = tmp_path / "shot.png"
    r = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1200,3000", url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_inputs_give_notes_not_errors(tmp_path):
    inputs = ReportInputs.under(tmp_path, inventory=tmp_path / "results" / "inventory.tsv",
                                samples=tmp_path / "samples.tsv", clinical=tmp_path / "clinical.tsv",
                                plots=[])
    out = build_report(inputs, tmp_path / "results" / "report.html", config={})
    page = out.read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page
    assert "cohort/patients.tsv was not found" in page
    assert page.count("Figure not available") == len(FIGURES)
    over_time = _section(page, "over_time")
    for name in ("patients", "mrd_timeline", "nk_timeline"):
        assert f"cohort/{name}.tsv was not found" in over_time, name
    assert "Figure not available: cohort/plots/over_time.png" in over_time
    assert "file not found" in _section(page, "provenance")
