"""Panel resolution: $PnS first, $PnN second, tolerant of case/spaces/hyphens/fluorochromes."""
from pathlib import Path

import pytest

from mrdflow.errors import PanelError
from mrdflow.panels import load_panel, load_panels, normalize_label, readouts, resolve_panel

PANELS = Path(__file__).resolve().parents[1] / "resources" / "panels"


@pytest.fixture
def ngf1():
    return load_panel(PANELS / "ngf_tube1.yaml")


def test_all_panels_load():
    panels = load_panels(PANELS)
    assert set(panels) == {"ngf_tube1", "ngf_tube2", "pb_nk", "pb_cart"}
    assert [m.name for m in panels["ngf_tube2"].markers][-2:] == ["IgK", "IgL"]


def test_normalize_label():
    assert normalize_label("CD38 ME") == "cd38me"
    assert normalize_label("PerCP-Cy5.5") == "percpcy55"


@pytest.mark.parametrize("label", ["CD138 BV421", "CD138-BV421", "cd138", "BV421 CD138", "CD138_bv421", " Cd 138 "])
def test_marker_spellings_resolve(ngf1, label):
    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time", "BV421-A", "BV510-A", "FITC-A", "PE-A", "PerCP-Cy5-5-A", "PE-Cy7-A",
           "APC-A", "APC-C750-A"]
    pns = ["", "", "", "", label, "CD27 BV510", "CD38 ME FITC", "CD56 PE", "CD45 PerCP-Cy5.5", "CD19 PE-Cy7",
           "CD117 APC", "CD81 APC-C750"]
    r = resolve_panel(ngf1, pnn, pns)
    assert r.index["CD138"] == 4
    assert r.via["CD138"] == "$PnS"
    assert r.index["CD38"] == 6 and r.index["FSC-H"] == 1 and r.index["Time"] == 3


def test_pnn_second(ngf1):
    # FACSDiva files often carry the marker in $PnN and no $PnS.
    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time", "CD138-A", "CD27", "CD38", "CD56", "CD45", "CD19", "CD117", "CD81"]
    r = resolve_panel(ngf1, pnn, None)
    assert r.index["CD138"] == 4 and r.via["CD138"] == "$PnN"
    assert r.pnn["CD81"] == "CD81"


def test_missing_marker_names_panel_marker_and_channels(ngf1):
    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time", "BV421-A", "BV510-A"]
    pns = ["", "", "", "", "CD138 BV421", "CD27 BV510"]
    with pytest.raises(PanelError) as e:
        resolve_panel(ngf1, pnn, pns, file="x.fcs")
    msg = str(e.value)
    assert "ngf_tube1" in msg and "'CD38'" in msg and "x.fcs" in msg and "BV510-A [CD27 BV510]" in msg


def test_ambiguous_marker_is_an_error(ngf1):
    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time", "BV421-A", "V450-A"]
    pns = ["", "", "", "", "CD138 BV421", "CD138 V450"]
    with pytest.raises(PanelError, match="several channels"):
        resolve_panel(ngf1, pnn, pns)


def test_area_preferred_over_height():
    panel = load_panel(PANELS / "pb_nk.yaml")
    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time", "Viability-A", "CD45-A", "CD3-A", "CD3-H", "NKG2A-A", "Dump-A", "CD56-A",
           "CD16-A"]
    r = resolve_panel(panel, pnn, None)
    assert r.pnn["CD3"] == "CD3-A"


def test_fmo_uses_detector_only_for_the_unstained_marker():
    panel = load_panel(PANELS / "pb_nk.yaml")
    pnn = ["FSC-A", "FSC-H", "SSC-A", "Time", "BV421-A", "BV510-A", "FITC-A", "PE-A", "PerCP-Cy5-5-A", "PE-Cy7-A",
           "APC-H7-A"]
    pns = ["", "", "", "", "Viability", "CD45", "CD3", "", "CD14/CD19", "CD56", "CD16"]
    with pytest.raises(PanelError, match="CD159a"):
        resolve_panel(panel, pnn, pns)
    r = resolve_panel(panel, pnn, pns, unstained={"CD159a"})
    assert r.pnn["CD159a"] == "PE-A" and r.via["CD159a"] == "detector"


def test_bad_panel_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmarkers:\n  CD3: {aliasses: [CD3]}\n")
    with pytest.raises(PanelError, match="aliasses"):
        load_panel(p)
    p.write_text("name: x\n")
    with pytest.raises(PanelError, match="markers"):
        load_panel(p)


def test_panels_name_their_readout():
    panels = load_panels(PANELS)
    assert {n: p.readout for n, p in panels.items()} == {
        "ngf_tube1": "pc_mrd", "ngf_tube2": "pc_mrd", "pb_nk": "nk", "pb_cart": "cart"}
    assert readouts(panels) == {n: p.readout for n, p in panels.items()}


def test_lab_panel_without_readout_loads(tmp_path):
    p = tmp_path / "lab.yaml"
    p.write_text("name: lab_t\nspecimen: PB\nmarkers:\n  CD3: {aliases: [CD3, Leu-4]}\n")
    panel = load_panel(p)
    assert panel.readout is None and panel.marker("CD3").aliases == ("CD3", "Leu-4")


def test_unknown_readout_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nreadout: mrd\nmarkers:\n  CD3: {aliases: [CD3]}\n")
    with pytest.raises(PanelError, match=r"bad.yaml: readout: 'mrd' is not one of \['pc_mrd', 'nk', 'cart'\]"):
        load_panel(p)
