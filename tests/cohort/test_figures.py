"""Cohort figures: each writes a PNG and an SVG, readable, deterministic, and survives missing data."""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

import mrdflow.cohort._figures as cp
from mrdflow.cohort._fig_mrd import _abbrev_reason
from mrdflow.cohort._fig_nkg2a import _assoc_caption
from mrdflow.cohort._fig_over_time import course_data
from mrdflow.cohort._fig_swimmer import _swimmer_rows
from mrdflow.cohort._plotkit import _dose_key
from mrdflow.formatting import p_relation

IDS = [f"PT0{i}" for i in range(1, 9)]
ASSOC = {"rho": -0.7142857, "p_value": 0.0575, "p_method": "exact", "n": 7, "ci_low": -0.953, "ci_high": -0.021}


# ---------------------------------------------------------------------------------------------
# Synthetic cohort (shapes as mrdflow.cohort writes them)
# ---------------------------------------------------------------------------------------------

def make_patients() -> pd.DataFrame:
    rows = [
        # pid,   resp,  fu,   inf1,         inf2,         dose2,  dose,  ld,        prog, prog_date,   nkg2a, auc
        ("PT01", "sCR", 7.9, "2025-01-03", None, math.nan, 3.0e8, "full", "no", None, 22.0, 2400.0),
        ("PT02", "SD", 2.1, "2025-06-28", None, math.nan, 1.5e8, "reduced", "no", None, 71.0, 95.0),
        ("PT03", "CR", 5.6, "2025-03-14", None, math.nan, 3.0e8, "full", "no", None, math.nan, 1800.0),
        ("PT04", "PR", 6.3, "2025-02-20", "2025-05-21", 4.5e8, 3.0e8, "full", "no", None, 48.0, 600.0),
        ("PT05", "sCR", 4.28, "2025-04-23", None, math.nan, 4.5e8, "full", "no", None, 18.0, 3100.0),
        ("PT06", "PR", 3.5, "2025-05-16", None, math.nan, 3.0e8, "reduced", "no", None, 55.0, 450.0),
        ("PT07", "VGPR", 4.0, "2025-05-01", None, math.nan, 4.5e8, "full", "no", None, 35.0, 1500.0),
        ("PT08", "PD", 0.9, "2025-08-04", None, math.nan, 3.0e8, "full", "yes", "2025-08-25", 80.0, 60.0),
    ]
    out = []
    for pid, resp, fu, i1, i2, d2, dose, ld, prog, pdate, nk, auc in rows:
        out.append({
            "patient_id": pid, "best_response": resp, "follow_up_months": fu, "infusion1_date": i1,
            "infusion2_date": i2, "infusion2_dose_cells": d2, "cart_dose_cells": dose,
            "dose_level": f"{dose / 10 ** int(math.log10(dose)):.1f}×10^{int(math.log10(dose))}",
            "lymphodepletion": ld, "progression": prog, "progression_date": pdate, "best_response_date": None,
            "baseline_nkg2a_pct": nk, "cart_auc_0_28": auc, "cart_persistence_day": 28.0, "cart_cmax": auc / 10,
            "w4_mrd_status": None, "w4_mrd_level": math.nan, "w4_sensitivity": math.nan,
        })
    return pd.DataFrame(out)


def _curve(day: float, cmax: float) -> float:
    return cmax * (day / 10.0) * math.exp(1 - day / 10.0) if day > 0 else 0.0


def make_kinetics() -> pd.DataFrame:
    cmax = {"PT01": 240, "PT02": 9, "PT03": 180, "PT04": 60, "PT05": 310, "PT06": 45, "PT07": 150, "PT08": 6}
    rows = []
    for pid, c in cmax.items():
        series = [(1, d) for d in (0, 4, 7, 10, 14, 21, 28, 60)]
        if pid == "PT04":
            series += [(2, d) for d in (0, 4, 7, 10, 14, 21, 28, 60, 90)]
        for inf, day in series:
            v = _curve(day, c * (0.7 if inf == 2 else 1.0))
            if pid == "PT02" and day in (28, 60):
                v = 0.0  # undetectable
            if pid == "PT07" and day == 60:
                v = math.nan  # sample lost
            rows.append({"patient_id": pid, "infusion": inf, "day": day, "cells_per_ul": round(v, 3),
                         "car_pct_cd3": math.nan, "cells_per_ul_ci95_low": v * 0.8 if v else math.nan,
                         "cells_per_ul_ci95_high": v * 1.25 if v else math.nan})
    return pd.DataFrame(rows)


def make_mrd() -> pd.DataFrame:
    w4 = {
        "PT01": ("negative", math.nan, 8.5e-6, "0 aberrant PC events < LOD 20"),
        "PT02": ("not_evaluable", math.nan, 4.0e-5, "3 aberrant PC events < LOD 20 but only 500000 nucleated "
                 "cells: sensitivity 4.0e-05 does not reach 1e-05 (needs >= 2000000)"),
        "PT03": ("negative", math.nan, 6.1e-6, "0 aberrant PC events < LOD 20"),
        "PT04": ("positive", 3.2e-4, 7.0e-6, "900 aberrant PC events >= LOD 20"),
        "PT05": ("negative", math.nan, 5.0e-6, "0 aberrant PC events < LOD 20"),
        "PT07": ("positive", 2.1e-5, 9.0e-6, "45 aberrant PC events >= LOD 20"),
        "PT08": ("positive", 1.8e-2, 9.5e-6, "many aberrant PC events"),
    }  # PT06: no week-4 marrow
    rows = []
    for pid in IDS:
        rows.append({"patient_id": pid, "sample_id": f"{pid}_BM_baseline", "visit": "baseline", "day": -5,
                     "infusion": 1, "mrd_status": "positive", "mrd_level": 0.05, "sensitivity": 5e-6, "reason": "",
                     "n_nucleated": 4_000_000, "n_aberrant_pc": 200_000})
        if pid in w4:
            st, lvl, sens, why = w4[pid]
            rows.append({"patient_id": pid, "sample_id": f"{pid}_BM_week4", "visit": "week4", "day": 28, "infusion": 1,
                         "mrd_status": st, "mrd_level": lvl, "sensitivity": sens, "reason": why,
                         "n_nucleated": 20 / sens, "n_aberrant_pc": 0})
    rows.append({"patient_id": "PT01", "sample_id": "PT01_BM_m6", "visit": "month6", "day": 180, "infusion": 1,
                 "mrd_status": "negative", "mrd_level": math.nan, "sensitivity": 4e-6, "reason": "",
                 "n_nucleated": 5_000_000, "n_aberrant_pc": 0})
    return pd.DataFrame(rows)


def make_nk(counted: bool = True) -> pd.DataFrame:
    """NK tubes: PT01–PT04 at days -5, 14, 28, 90 (counted when ``counted``); PT05, PT06 a baseline
    tube without counting beads."""
    rows = []
    for pid in ("PT01", "PT02", "PT03", "PT04"):
        for day, cells, nkg2a in ((-5, 180.0, 30.0), (14, 20.0, 60.0), (28, 90.0, 55.0), (90, 160.0, 40.0)):
            rows.append({"patient_id": pid, "sample_id": f"{pid}_PB_NK_D{day}", "visit": "serial", "day": day,
                         "day_since_infusion1": day, "infusion": 1,
                         "nk_cells_per_ul": cells if counted else math.nan,
                         "nk_cells_per_ul_ci95_low": cells * 0.8 if counted else math.nan,
                         "nk_cells_per_ul_ci95_high": cells * 1.25 if counted else math.nan,
                         "nk_count_reason": "" if counted else "no counting beads in the NK tube: NKG2A % only",
                         "nkg2a_pct": nkg2a})
    for pid in ("PT05", "PT06"):
        rows.append({"patient_id": pid, "sample_id": f"{pid}_PB_baseline_nk", "visit": "baseline", "day": -5,
                     "day_since_infusion1": -5, "infusion": 1, "nk_cells_per_ul": math.nan,
                     "nk_cells_per_ul_ci95_low": math.nan, "nk_cells_per_ul_ci95_high": math.nan,
                     "nk_count_reason": "no counting beads in the NK tube: NKG2A % only", "nkg2a_pct": 41.0})
    return pd.DataFrame(rows)


def make_mrd_over_time() -> pd.DataFrame:
    """make_mrd() and a day-240 marrow of PT01, a marrow 30 days after PT04's second infusion (day
    since infusion 1 unknown in the row: the figures move it by the infusion dates)."""
    later = pd.DataFrame([
        {"patient_id": "PT01", "sample_id": "PT01_BM_m8", "visit": "month8", "day": 240, "day_since_infusion1": 240,
         "infusion": 1, "mrd_status": "negative", "mrd_level": math.nan, "sensitivity": 4e-6, "reason": ""},
        {"patient_id": "PT04", "sample_id": "PT04_BM_I2_D030", "visit": "serial", "day": 30,
         "day_since_infusion1": math.nan, "infusion": 2, "mrd_status": "not_evaluable", "mrd_level": math.nan,
         "sensitivity": 3e-5, "reason": "hemodilution"},
    ])
    return pd.concat([make_mrd(), later], ignore_index=True)


@pytest.fixture(scope="module")
def tables():
    return make_patients(), make_kinetics(), make_mrd()


@pytest.fixture(scope="module")
def figs(tables, tmp_path_factory):
    """Each figure rendered once from the synthetic cohort: name -> (paths, svg text)."""
    patients, kinetics, mrd = tables
    out = tmp_path_factory.mktemp("figs")
    made = {
        "swimmer": cp.swimmer_plot(patients, mrd, out / "swimmer", data_cut="2025-09-01"),
        "kinetics": cp.kinetics_plot(kinetics, patients, out / "kinetics", lloq=1.0),
        "nkg2a": cp.nkg2a_auc_plot(patients, out / "nkg2a", assoc=ASSOC),
        "mrd": cp.mrd_plot(mrd, patients, out / "mrd"),
        "over_time": cp.over_time_plot(patients, kinetics, make_nk(), make_mrd_over_time(), out / "over_time",
                                       lloq=1.0),
    }
    return {k: (v, v[1].read_text(encoding="utf-8")) for k, v in made.items()}


def svg_texts(svg: str) -> list[str]:
    """The text content of every <text> element (svg.fonttype 'none' keeps text as text)."""
    import html
    return [html.unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S)]


def check_png(path: Path, min_w: int = 800) -> np.ndarray:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    h, w = img.shape[:2]
    assert min_w <= w <= 3000 and 400 <= h <= 3000, img.shape
    assert float(img[..., :3].std()) > 0.01, "blank image"
    return img


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["swimmer", "kinetics", "nkg2a", "mrd", "over_time"])
def test_writes_png_and_svg(figs, tmp_path, name):
    paths, svg = figs[name]
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].name == f"{name}.png" and paths[1].name == f"{name}.svg"
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    check_png(paths[0])
    assert not list(paths[0].parent.glob(".*part")), "temporary files left behind"
    # no time stamp or version text
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg
    assert b"Software" not in paths[0].read_bytes()


def test_png_at_200_dpi(figs):
    png = figs["swimmer"][0][0]
    img = mpimg.imread(png)
    # 7.6 in wide at 200 dpi
    assert img.shape[1] == 1520


def test_stem_with_dots_keeps_its_name(tables, tmp_path):
    patients, _, mrd = tables
    paths = cp.mrd_plot(mrd, patients, tmp_path / "fig.v1")
    assert [p.name for p in paths] == ["fig.v1.png", "fig.v1.svg"]


# ---------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------

def test_swimmer_labels_every_patient_and_mark(figs):
    texts = svg_texts(figs["swimmer"][1])
    for pid in IDS:
        assert pid in texts
    for mark in ("MRD negative", "MRD positive", "MRD not evaluable", "Second infusion", "Progression",
                 "Response ongoing"):
        assert mark in texts, mark
    assert any("3.0×10⁸" in t and "full LD" in t for t in texts)
    assert any("2025-09-01" in t for t in texts)


def test_swimmer_sorted_by_follow_up(figs):
    """Longest follow-up at the top: in the SVG (y grows downwards) PT01 sits above PT08."""
    svg = figs["swimmer"][1]
    ys = {}
    for pid in IDS:
        m = re.search(r'<text[^>]*transform="translate\([\d.]+ ([\d.]+)\)[^>]*>' + pid + "<", svg) or \
            re.search(r'<text[^>]*y="([\d.]+)"[^>]*>' + pid + "<", svg)
        assert m, pid
        ys[pid] = float(m.group(1))
    assert sorted(IDS, key=ys.get) == ["PT01", "PT04", "PT03", "PT05", "PT07", "PT06", "PT02", "PT08"]


def test_swimmer_leaves_out_marks_that_do_not_occur(tables, tmp_path):
    patients, _, mrd = tables
    p = patients.copy()
    p["infusion2_date"] = None
    p["progression"] = "no"
    texts = svg_texts(cp.swimmer_plot(p, mrd[mrd["day"] <= 0], tmp_path / "s")[1].read_text("utf-8"))
    for mark in ("Second infusion", "Progression", "MRD negative", "MRD positive"):
        assert mark not in texts
    assert "Response ongoing" in texts


def svg_x(svg: str, gid: str) -> list[float]:
    """x positions (SVG user units) in the element matplotlib wrote for the artist of that gid: a
    marker's placement, or a line's or a bar's path vertices."""
    m = re.search(rf'<g id="{re.escape(gid)}">(.*?)</g>', svg, re.S)
    assert m, f"no element {gid!r} in the SVG"
    uses = re.findall(r'<use [^>]*\bx="([-\d.]+)"', m.group(1))
    if uses:
        return [float(x) for x in uses]
    return [float(x) for x in re.findall(r'[ML] ([-\d.]+) [-\d.]+', m.group(1))]


def test_swimmer_places_each_marrow_at_its_own_time(tables, tmp_path):
    """A day-240 marrow sits at ~7.9 months, not with the week-4 ones at month 1; a marrow counted
    from the second infusion is moved by the infusion dates."""
    patients, _, _ = tables
    mrd = make_mrd_over_time()
    rows = {d["pid"]: d for d in _swimmer_rows(patients, mrd, None)}
    assert [round(mo, 3) for mo, _ in rows["PT01"]["mrd"]] == [round(28 / 30.4375, 3), round(180 / 30.4375, 3),
                                                               round(240 / 30.4375, 3)]
    assert rows["PT01"]["mrd"][-1] == pytest.approx((7.885, "negative"), abs=1e-3)
    assert rows["PT04"]["mrd"][-1] == pytest.approx((120 / 30.4375, "not_evaluable"))  # 90 + 30 days
    svg = cp.swimmer_plot(patients, mrd, tmp_path / "s")[1].read_text("utf-8")
    x0, x_fu = min(svg_x(svg, "bar-PT01")), max(svg_x(svg, "bar-PT01"))  # the bar: 0 to 7.9 months
    months = lambda gid: (svg_x(svg, gid)[0] - x0) / (x_fu - x0) * 7.9  # noqa: E731
    assert months("mrd-PT01-negative-day240") == pytest.approx(7.885, abs=0.02)
    assert months("mrd-PT01-negative-day28") == pytest.approx(0.92, abs=0.02)
    assert months("mrd-PT04-not_evaluable-day120") == pytest.approx(3.94, abs=0.02)


# ---------------------------------------------------------------------------------------------
# Course over time
# ---------------------------------------------------------------------------------------------

def _days(svg: str, gid: str, pid: str) -> list[float]:
    """Days since infusion 1 of an artist in the panel of ``pid``: PT04's infusion lines (days 0 and
    90) set the scale, ``pid``'s day-0 line the origin (PT01, PT04, PT07 share the first column)."""
    scale = (svg_x(svg, "inf2-PT04-day90")[0] - svg_x(svg, "inf1-PT04")[0]) / 90.0
    return [(x - svg_x(svg, f"inf1-{pid}")[0]) / scale for x in svg_x(svg, gid)]


def test_over_time_marks_mrd_at_its_days(figs):
    svg = figs["over_time"][1]
    assert _days(svg, "mrd-PT01-positive-day-5", "PT01") == [pytest.approx(-5, abs=0.5)]
    for day in (28, 180, 240):
        assert _days(svg, f"mrd-PT01-negative-day{day}", "PT01") == [pytest.approx(day, abs=0.5)]
    # counted from the second infusion in its row: moved by the 90 days between the infusions
    assert _days(svg, "mrd-PT04-not_evaluable-day120", "PT04") == [pytest.approx(120, abs=0.5)]
    texts = svg_texts(svg)
    for mark in ("Negative", "Positive", "Not evaluable", "Marrow MRD (top row)"):
        assert mark in texts, mark


def test_over_time_marks_second_infusion_and_progression(figs):
    svg = figs["over_time"][1]
    assert _days(svg, "inf2-PT04-day90", "PT04") == [pytest.approx(90, abs=0.5)] * 2  # a vertical line
    assert _days(svg, "progression-PT08-day21", "PT08") == pytest.approx([21, 21], abs=0.5)
    assert len(re.findall(r'<g id="inf2-', svg)) == 1 and len(re.findall(r'<g id="progression-', svg)) == 1
    texts = svg_texts(svg)
    assert "Second infusion" in texts and "Progression" in texts and "CAR-T after infusion 2" in texts
    # CAR-T after infusion 2 starts at infusion 2 (kinetics rows counted from their own infusion)
    assert _days(svg, "cart-PT04-inf2", "PT04")[0] == pytest.approx(90, abs=0.5)
    for pid in IDS:
        assert pid in texts


def test_over_time_with_nk_counts(figs):
    svg = figs["over_time"][1]
    texts = svg_texts(svg)
    assert _days(svg, "nk-PT01", "PT01") == pytest.approx([-5, 14, 28, 90], abs=0.5)
    assert "NK cells, 95% CI (Poisson)" in texts and "NKG2A+ % of NK" in texts
    assert 'id="nk-uncounted-PT05"' in svg and "NK tube without a count" in texts  # PT05's tube has no beads
    caption = " ".join(t for t in texts if t.startswith("One panel"))
    assert "Ticks on the day axis: NK tubes without a count" in caption


def test_over_time_without_nk_counts(tables, tmp_path):
    """No NK tube with counting beads (today's demo): a valid figure, the tubes as ticks and a note."""
    patients, kinetics, _ = tables
    paths = cp.over_time_plot(patients, kinetics, make_nk(counted=False), make_mrd_over_time(), tmp_path / "o")
    check_png(paths[0])
    svg = paths[1].read_text("utf-8")
    texts = svg_texts(svg)
    assert 'id="nk-PT01"' not in svg and 'id="nk-uncounted-PT01"' in svg
    assert "NK cells, 95% CI (Poisson)" not in texts and "NK tube without a count" in texts
    caption = " ".join(texts)
    assert "No NK cell counts: no counting beads in the NK tube: NKG2A % only." in caption
    assert 'id="mrd-PT01-negative-day240"' in svg and 'id="cart-PT01-inf1"' in svg
    # no NK table at all, or one without rows (two patients, to keep it quick)
    def two(df):
        return df[df.patient_id.isin(["PT01", "PT04"])]
    for nk in (None, pd.DataFrame(), make_nk().iloc[0:0]):
        paths = cp.over_time_plot(two(patients), two(kinetics), nk, two(make_mrd_over_time()), tmp_path / "n")
        check_png(paths[0])
        assert "No NK tubes: no NK counts or NKG2A % to show." in " ".join(svg_texts(paths[1].read_text("utf-8")))


def test_over_time_with_only_some_tables(tables, tmp_path):
    patients, kinetics, mrd = tables
    texts = svg_texts(cp.over_time_plot(None, None, None, mrd, tmp_path / "m")[1].read_text("utf-8"))
    assert "PT01" in texts and any("No CAR-T counts." in t for t in texts)
    texts = svg_texts(cp.over_time_plot(patients[["patient_id"]], kinetics, None, None, tmp_path / "k")[1]
                      .read_text("utf-8"))
    assert any("No marrow MRD calls." in t for t in texts) and "response n/a · dose n/a" in texts
    one = cp.over_time_plot(patients.iloc[:1], kinetics[kinetics.patient_id == "PT01"], None, None, tmp_path / "1")
    check_png(one[0])


def test_course_data_times():
    data = course_data(make_patients(), make_kinetics(), make_nk(), make_mrd_over_time())
    assert list(data) == IDS
    assert data["PT04"]["inf2"] == 90 and math.isnan(data["PT01"]["inf2"])
    assert data["PT08"]["prog"] == 21 and math.isnan(data["PT01"]["prog"])
    assert [c["day"] for c in data["PT04"]["cart"] if c["inf"] == 2][:2] == [90, 94]
    assert data["PT01"]["mrd"] == [(-5, "positive"), (28, "negative"), (180, "negative"), (240, "negative")]
    assert data["PT01"]["fu"] == pytest.approx(7.9 * 30.4375)
    assert [c["day"] for c in data["PT02"]["nk"]] == [-5, 14, 28, 90]
    assert math.isnan(data["PT05"]["nk"][0]["y"]) and data["PT05"]["nk"][0]["nkg2a"] == 41.0


def test_kinetics_content(figs):
    texts = svg_texts(figs["kinetics"][1])
    assert "PT04 (inf. 2)" in texts
    for pid in IDS:
        assert pid in texts  # each labelled at its peak
    assert "Infusion 2" in texts
    assert any(t.startswith("Not detected") for t in texts)
    assert "LLOQ (1 cells/µL)" in texts
    for dose in ("1.5×10⁸", "3.0×10⁸", "4.5×10⁸"):
        assert dose in texts


def test_kinetics_without_lloq_or_zeros(tables, tmp_path):
    patients, kinetics, _ = tables
    k = kinetics[kinetics["cells_per_ul"].fillna(1) > 0]
    texts = svg_texts(cp.kinetics_plot(k, patients, tmp_path / "k")[1].read_text("utf-8"))
    assert not any(t.startswith("LLOQ") for t in texts)
    assert not any(t.startswith("Not detected") for t in texts)


def test_nkg2a_caption(figs):
    texts = svg_texts(figs["nkg2a"][1])
    cap = next(t for t in texts if t.startswith("Spearman"))
    assert cap == "Spearman ρ = −0.71 (95% CI −0.95 to −0.02), exact p = 0.058, n = 7 — exploratory"
    assert any(t.startswith("1 patient not shown") and "PT03" in t for t in texts)
    assert "PT03" not in texts  # no point for the NaN patient
    for pid in set(IDS) - {"PT03"}:
        assert pid in texts
    assert "NKG2A+ % of NK cells (baseline)" in texts


def test_nkg2a_without_assoc_and_other_y(tables, tmp_path):
    patients, _, _ = tables
    p = patients.copy()
    p.loc[p.patient_id == "PT02", "cart_cmax"] = 0.0  # not all positive -> linear axis, still drawn
    svg = cp.nkg2a_auc_plot(p, tmp_path / "n", y="cart_cmax")[1].read_text("utf-8")
    texts = svg_texts(svg)
    assert not any(t.startswith("Spearman") for t in texts)
    assert "n = 7; association not computed" in texts
    assert "CAR-T Cmax (cells/µL)" in texts


def test_assoc_caption_formats():
    assert _assoc_caption(None) is None
    assert _assoc_caption({"rho": math.nan}) is None
    assert _assoc_caption({"rho": 0.5, "n": 5}) == "Spearman ρ = 0.50, n = 5 — exploratory"
    assert _assoc_caption({"rho": 0.1, "p_value": 0.0004, "p_method": "permutation", "n": 8}) == \
        "Spearman ρ = 0.10, permutation p < 0.001, n = 8 — exploratory"
    assert p_relation(0.21) == "= 0.21" and p_relation(0.0575) == "= 0.058" and p_relation(0.0042) == "= 0.0042"


def test_mrd_content(figs):
    texts = svg_texts(figs["mrd"][1])
    assert "<8.5e−6" in texts and "<6.1e−6" in texts and "<5.0e−6" in texts
    assert "3.2e−4" in texts and "1.8e−2" in texts
    assert "too few" in texts and "cells" in texts  # PT02's reason, abbreviated (2 lines)
    assert " 10⁻⁵ (IMWG)" in texts
    assert "no" in texts and "sample" in texts  # PT06 has no week-4 marrow
    # patients on the x axis, sorted
    ticks = [t for t in texts if t in IDS]
    assert ticks[:8] == sorted(IDS)


def test_mrd_falls_back_to_patient_table(tables, tmp_path):
    patients, _, _ = tables
    p = patients.copy()
    p.loc[p.patient_id == "PT05", ["w4_mrd_status", "w4_mrd_level", "w4_sensitivity"]] = ["positive", 4.4e-3, 1e-5]
    texts = svg_texts(cp.mrd_plot(None, p, tmp_path / "m")[1].read_text("utf-8"))
    assert "4.4e−3" in texts


def test_abbrev_reason():
    assert _abbrev_reason("sample quality: ngf1: too few events") == "QC failed"
    assert _abbrev_reason("hemodilution: 0 aberrant PC events < LOD") == "hemodiluted"
    assert _abbrev_reason("no nucleated cells after QC") == "no cells"
    assert _abbrev_reason(None) == "n.e."
    assert _abbrev_reason("a very long custom reason that goes on") == "a very long cus…"


def test_colours():
    assert list(cp.RESPONSE_COLORS) == ["sCR", "CR", "VGPR", "PR", "MR", "SD", "PD"]
    r, g, b = (int(cp.RESPONSE_COLORS["PD"][i:i + 2], 16) for i in (1, 3, 5))
    assert r > g and r > b  # red
    for k in ("sCR", "CR"):
        r, g, b = (int(cp.RESPONSE_COLORS[k][i:i + 2], 16) for i in (1, 3, 5))
        assert g > r and g > b  # green
    assert len(set(cp.RESPONSE_COLORS.values())) == 7
    assert cp.dose_color("3.0×10^8") == cp.DOSE_COLORS["3.0×10^8"]
    assert cp.dose_color("2.0×10^8", ["2.0×10^8", "7.0×10^8"]) != cp.dose_color("7.0×10^8", ["2.0×10^8", "7.0×10^8"])
    assert _dose_key(3e8) == "3.0×10^8" and _dose_key(math.nan, "4.5×10^8") == "4.5×10^8"


# ---------------------------------------------------------------------------------------------
# Missing data
# ---------------------------------------------------------------------------------------------

def test_empty_inputs_give_a_figure(tmp_path):
    empty = pd.DataFrame()
    calls = {
        "swimmer": lambda s: cp.swimmer_plot(empty, empty, s),
        "kinetics": lambda s: cp.kinetics_plot(empty, empty, s, lloq=1.0),
        "nkg2a": lambda s: cp.nkg2a_auc_plot(empty, s, assoc=None),
        "mrd": lambda s: cp.mrd_plot(empty, empty, s),
        "over_time": lambda s: cp.over_time_plot(empty, empty, empty, empty, s, lloq=1.0),
    }
    for name, call in calls.items():
        paths = call(tmp_path / name)
        assert all(p.stat().st_size > 0 for p in paths)
        check_png(paths[0], min_w=500)
        texts = svg_texts(paths[1].read_text("utf-8"))
        assert any(t.startswith("no ") for t in texts), name


def test_all_nan_columns_and_missing_rows(tables, tmp_path):
    patients, kinetics, mrd = tables
    p = patients.copy()
    for c in ("follow_up_months", "baseline_nkg2a_pct", "cart_auc_0_28", "infusion1_date", "best_response"):
        p[c] = None if c in ("infusion1_date", "best_response") else math.nan
    k = kinetics[kinetics.patient_id != "PT03"].copy()  # a patient with no kinetics
    k.loc[k.patient_id == "PT01", "cells_per_ul"] = math.nan
    m = mrd.copy()
    m["sensitivity"] = math.nan
    texts = svg_texts(cp.swimmer_plot(p, m, tmp_path / "s", data_cut="2025-09-01")[1].read_text("utf-8"))
    assert "follow-up not reported" in texts and "PT03" in texts
    texts = svg_texts(cp.kinetics_plot(k, p, tmp_path / "k")[1].read_text("utf-8"))
    assert "PT03" not in texts and "PT01" not in texts and "PT05" in texts
    texts = svg_texts(cp.nkg2a_auc_plot(p, tmp_path / "n", assoc=ASSOC)[1].read_text("utf-8"))
    assert any(t.startswith("no patient with both values") for t in texts)
    texts = svg_texts(cp.mrd_plot(m, p, tmp_path / "m")[1].read_text("utf-8"))
    assert "sens. n/a" in texts and "not assessed" in texts
    # missing columns entirely
    cp.swimmer_plot(p[["patient_id"]], None, tmp_path / "s2")
    cp.kinetics_plot(k[["patient_id", "day", "cells_per_ul"]], None, tmp_path / "k2")


def test_swimmer_follow_up_from_data_cut(tables, tmp_path):
    patients, _, mrd = tables
    p = patients.copy()
    p["follow_up_months"] = math.nan
    texts = svg_texts(cp.swimmer_plot(p, mrd, tmp_path / "s", data_cut="2025-09-01")[1].read_text("utf-8"))
    assert "follow-up not reported" not in texts
    texts = svg_texts(cp.swimmer_plot(p, mrd, tmp_path / "s")[1].read_text("utf-8"))
    assert "follow-up not reported" in texts


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

def test_identical_input_gives_identical_bytes(tables, figs, tmp_path):
    patients, kinetics, mrd = tables
    a = cp.swimmer_plot(patients, mrd, tmp_path / "a", data_cut="2025-09-01")
    b = cp.swimmer_plot(patients.copy(), mrd.copy(), tmp_path / "b", data_cut="2025-09-01")
    assert a[0].read_bytes() == b[0].read_bytes() == figs["swimmer"][0][0].read_bytes()
    assert a[1].read_bytes() == b[1].read_bytes()
    e = cp.over_time_plot(patients.copy(), kinetics.copy(), make_nk(), make_mrd_over_time(), tmp_path / "e",
                          lloq=1.0)
    assert e[0].read_bytes() == figs["over_time"][0][0].read_bytes()
    assert e[1].read_bytes() == figs["over_time"][0][1].read_bytes()
    c = cp.kinetics_plot(kinetics, patients, tmp_path / "c", lloq=1.0)
    assert c[0].read_bytes() == figs["kinetics"][0][0].read_bytes()
    assert c[1].read_bytes() == figs["kinetics"][0][1].read_bytes()
    # and a real change does change the picture
    d = cp.swimmer_plot(patients.assign(follow_up_months=patients.follow_up_months + 1), mrd, tmp_path / "d")
    assert d[0].read_bytes() != a[0].read_bytes()
