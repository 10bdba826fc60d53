"""The lab's gating folder: written from pooled values, re-loaded by the pipeline's template loader;
and the template loader's checks of the ``expected:`` section."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mrdflow.calibration import TSV_COLUMNS, calibrate_pooled, write_lab_gating
from mrdflow.errors import CalibrationError
from mrdflow.gating import GatingError, load_template

REPO = Path(__file__).resolve().parents[2]
GATING = REPO / "resources" / "gating"


def _mix(*parts, seed=5):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, s, n) for c, s, n in parts])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """ngf_tube1 calibrated on synthetic pooled values: FSC-A at 3/4 of the template's scale, CD138
    found at (0.25, 0.74), CD38 with its negative only, CD45 with too few events."""
    pooled = {
        "FSC-A": (_mix((0.04, 0.01, 500), (0.14, 0.02, 2000), (0.27, 0.03, 7000)), None),
        "CD138": (_mix((0.25, 0.05, 7000), (0.74, 0.04, 3000)), None),
        "CD38": (_mix((0.37, 0.05, 9000)), None),
        "CD45": (np.array([0.1, 0.6]), None),
        "CD19": (_mix((0.20, 0.04, 9000), (0.58, 0.04, 1000)), None),
        "CD117": (_mix((0.17, 0.04, 8000), (0.62, 0.04, 2000)), None),
    }
    cal = calibrate_pooled("ngf_tube1", GATING, pooled, files=["a.fcs", "b.fcs"], review=["a.fcs: PC: unsure"])
    out = tmp_path_factory.mktemp("lab")
    written = write_lab_gating([cal], out)
    return cal, out, written


def test_markers_statuses_and_maps(lab):
    cal, _, _ = lab
    st = {m: c.status for m, c in cal.markers.items()}
    assert st == {"FSC-A": "scale", "CD138": "affine", "CD38": "shift", "CD45": "template", "CD19": "affine",
                  "CD117": "affine"}
    assert cal.markers["FSC-A"].map.a == pytest.approx(0.27 / 0.36, abs=0.02)
    assert cal.markers["CD138"].map(0.22) == pytest.approx(0.25, abs=0.02)
    assert cal.markers["CD138"].map(0.77) == pytest.approx(0.74, abs=0.02)
    assert "too few events" in cal.markers["CD45"].note
    assert set(cal.unmapped) == {"FSC-H", "SSC-A", "CD81"}


def test_written_rules_reload_with_the_same_gates_and_mapped_windows(lab):
    cal, out, written = lab
    assert {p.name for p in written} >= {"ngf_tube1.xml", "ngf_tube1.yaml", "calibration.tsv"}
    tpl = load_template(GATING, "ngf_tube1")
    got = load_template(out, "ngf_tube1")
    assert [g for g, _ in got.strategy.get_gate_ids()] == [g for g, _ in tpl.strategy.get_gate_ids()]
    assert got.rules.keys() == tpl.rules.keys()
    for gid, rule in tpl.rules.items():
        new = got.rules[gid]
        assert new.method == rule.method and new.bounds.keys() == rule.bounds.keys()
        for key, b in rule.bounds.items():
            nb = new.bounds[key]
            assert nb.method == b.method and (nb.fallback is None) == (b.fallback is None)
            m = cal.maps.get(key.rsplit(".", 1)[0])
            if b.window is not None and m is not None:
                assert nb.window == pytest.approx(tuple(m.range(b.window)), abs=1e-9)
    cd138, cd38 = cal.maps["CD138"], cal.maps["CD38"]
    pc = got.rules["PC"].bounds
    assert pc["CD38.min"].window == pytest.approx((0.6 + cd38.b, 0.8 + cd38.b), abs=1e-3)
    assert pc["CD38.min"].fallback.window == pc["CD38.min"].window
    assert pc["CD38.min"].given["CD138"][0] == pytest.approx(cd138(0.45), abs=1e-3)
    assert pc["CD138.min"].within_gate and list(pc) == ["CD38.min", "CD138.min"]  # order and flags kept
    assert got.rules["NRBC"].bounds["CD45.max"].window == (0.15, 0.45)  # CD45 left as in the template
    assert got.rules["Nucleated"].bounds["FSC-A.min"].window == pytest.approx(
        (0.04 * cal.maps["FSC-A"].a, 0.2 * cal.maps["FSC-A"].a), abs=1e-3)
    # the Gating-ML's fixed coordinates of a mapped dimension are mapped the same way
    nrbc = {d.id: d for d in got.strategy.get_gate("NRBC").dimensions}
    assert nrbc["CD138"].max == pytest.approx(cd138(0.45), abs=1e-3) and nrbc["CD45"].max == 0.3
    assert nrbc["SSC-A"].max == 0.12


def test_header_expected_section_tsv_and_plots(lab):
    cal, out, _ = lab
    text = (out / "ngf_tube1.yaml").read_text()
    assert "#   a.fcs" in text and cal.when in text and "a.fcs: PC: unsure" in text
    assert "CD138      Nucleated       0.220 -> 0.2" in text and "CD81       left as in the template" in text
    doc = yaml.safe_load(text)
    assert doc["expected"]["markers"]["CD138"]["positive"] == pytest.approx(0.74, abs=0.02)
    assert doc["expected"]["markers"]["CD45"] == {"negative": 0.09, "positive": 0.6}
    with open(out / "calibration.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert tuple(rows[0]) == TSV_COLUMNS
    by = {r["marker"]: r for r in rows}
    assert by["CD138"]["status"] == "affine" and float(by["CD138"]["found_positive"]) == pytest.approx(0.74, abs=0.02)
    assert by["CD38"]["found_positive"] == "NA" and "positive not found" in by["CD38"]["note"]
    assert by["CD81"]["status"] == "template"
    for marker in cal.markers:
        assert (out / "plots" / "ngf_tube1" / f"{marker}.png").stat().st_size > 1000


def test_tsv_keeps_other_panels_rows(lab, tmp_path):
    cal, out, _ = lab
    shutil.copy(out / "calibration.tsv", tmp_path / "calibration.tsv")
    with open(tmp_path / "calibration.tsv", "a") as fh:
        fh.write("pb_nk\tCD3" + "\tNA" * (len(TSV_COLUMNS) - 2) + "\n")
    write_lab_gating([cal], tmp_path, plots=False)
    panels = [r.split("\t")[0] for r in (tmp_path / "calibration.tsv").read_text().splitlines()[1:]]
    assert panels.count("pb_nk") == 1 and panels.count("ngf_tube1") == len(cal.markers) + len(cal.unmapped)


def test_a_template_without_expected_positions_is_refused(tmp_path):
    shutil.copy(GATING / "ngf_tube1.xml", tmp_path)
    (tmp_path / "ngf_tube1.yaml").write_text("gates:\n  TimeOK: {method: time_qc}\n")
    with pytest.raises(CalibrationError, match="ngf_tube1.yaml: panel 'ngf_tube1' has no 'expected:'"):
        calibrate_pooled("ngf_tube1", tmp_path, {})


@pytest.mark.parametrize("section, message", [
    ("expected: [1, 2]", r"expected: must be a mapping with 'markers'"),
    ("expected: {markers: {}}", r"expected.markers: must be a mapping"),
    ("expected: {population: Nope, markers: {CD38: {negative: 0.1}}}", r"expected.population: 'Nope' is not a gate"),
    ("expected: {markers: {CD99: {negative: 0.1}}}", r"expected.markers.CD99: not a dimension"),
    ("expected: {markers: {CD38: {negative: high}}}", r"expected.markers.CD38.negative: must be a number in \[0, 1\]"),
    ("expected: {markers: {CD38: {negative: 0.5, positive: 0.4}}}", r"expected.markers.CD38: positive \(0.4\) must"),
    ("expected: {markers: {CD38: {positive: 0.4}}}", r"expected.markers.CD38: give negative"),
    ("expected: {markers: {FSC-A: {main: 0.3, negative: 0.1}}}", r"expected.markers.FSC-A: give negative"),
    ("expected: {markers: {CD38: {negative: 0.1, where: x}}}", r"expected.markers.CD38: must be a mapping of"),
    ("expected: {markers: {CD38: {negative: 0.1, population: PCs}}}",
     r"expected.markers.CD38.population: 'PCs' is not a gate"),
])
def test_the_template_loader_checks_the_expected_section(tmp_path, section, message):
    shutil.copy(GATING / "ngf_tube1.xml", tmp_path)
    (tmp_path / "ngf_tube1.yaml").write_text("gates:\n  TimeOK: {method: time_qc}\n" + section + "\n")
    with pytest.raises(GatingError, match=str(tmp_path / "ngf_tube1.yaml").replace(".", r"\.") + ": " + message):
        load_template(tmp_path, "ngf_tube1")
