"""Panel resolution: $PnS first, $PnN second, tolerant of case/spaces/hyphens/fluorochromes."""
import re
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
    assert set(panels) == {"ngf_tube1", "ngf_tube2", "pb_nk", "pb_nk_beads", "pb_cart"}
    assert [m.name for m in panels["pb_nk_beads"].markers] == [m.name for m in panels["pb_nk"].markers] + ["Beads"]
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
        "ngf_tube1": "pc_mrd", "ngf_tube2": "pc_mrd", "pb_nk": "nk", "pb_nk_beads": "nk", "pb_cart": "cart"}
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


# ---- a marker read on other markers' channels (shares) ----------------------------------------
CART_PNN = ["FSC-A", "FSC-H", "SSC-A", "BV421-A", "BV510-A", "FITC-A", "PE-A", "PE-Cy7-A", "APC-H7-A", "Time"]
CART_PNS = ["", "", "", "Viability", "CD45", "CD3", "CAR", "CD4", "CD8", ""]


def _shared_panel(tmp_path, beads: str):
    text = (PANELS / "pb_cart.yaml").read_text()
    lines = [f"  Beads: {beads}" if line.startswith("  Beads:") else line for line in text.splitlines()]
    p = tmp_path / "pb_cart.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_shared_marker_resolves_without_a_channel_of_its_own(tmp_path):
    panel = load_panel(_shared_panel(tmp_path, "{aliases: [Beads, CountBright], shares: [CD4, CD8]}"))
    assert panel.marker("Beads").shares == ("CD4", "CD8")
    r = resolve_panel(panel, CART_PNN, CART_PNS, file="t.fcs")
    assert r.shared == {"Beads": ("CD4", "CD8")}
    assert "Beads" not in r.index and "Beads" not in r.pnn
    assert r.pnn["CD8"] == "APC-H7-A"
    one = resolve_panel(load_panel(_shared_panel(tmp_path, "{aliases: [Beads], shares: [CD8]}")), CART_PNN, CART_PNS)
    assert one.shared == {"Beads": ("CD8",)}


def test_own_bead_channel_panel_is_as_before():
    panel = load_panel(PANELS / "pb_cart.yaml")
    assert all(not m.shares for m in panel.all)
    r = resolve_panel(panel, [*CART_PNN[:-1], "APC-A", "Time"], [*CART_PNS[:-1], "Beads", ""])
    assert r.shared == {} and r.pnn["Beads"] == "APC-A"
    with pytest.raises(PanelError, match="'Beads'"):  # the own channel is still required
        resolve_panel(panel, CART_PNN, CART_PNS)


@pytest.mark.parametrize("beads, message", [
    ("{aliases: [Beads], shares: [CD99]}", r"marker 'Beads': shares: 'CD99' is not a fluorescence marker of the panel"),
    ("{aliases: [Beads], shares: [Beads, CD8]}", r"marker 'Beads': 'shares' names the marker itself"),
    ("{aliases: [Beads], shares: []}", r"marker 'Beads': 'shares' must be a non-empty list of marker names"),
    ("{aliases: [Beads], shares: CD8}", r"marker 'Beads': 'shares' must be a non-empty list of marker names"),
    ("{aliases: [Beads], shares: [CD8, CD8]}", r"marker 'Beads': 'shares' names a marker twice"),
    ("{aliases: [Beads], shares: [FSC-A]}", r"marker 'Beads': shares: 'FSC-A' is not a fluorescence marker"),
    ("{aliases: [Beads], shares: [CD8], detector: APC-A}", r"marker 'Beads': 'shares' \(no channel of its own\) and"),
])
def test_bad_shares_are_refused_naming_file_and_field(tmp_path, beads, message):
    path = _shared_panel(tmp_path, beads)
    with pytest.raises(PanelError, match=re.escape(str(path)) + ": " + message):
        load_panel(path)


def test_a_shared_marker_cannot_be_shared(tmp_path):
    p = tmp_path / "lab.yaml"
    p.write_text("name: lab\nmarkers:\n  CD4: {aliases: [CD4]}\n  CD8: {aliases: [CD8]}\n"
                 "  Beads: {aliases: [Beads], shares: [CD4, CD8]}\n  Other: {aliases: [X], shares: [Beads]}\n")
    with pytest.raises(PanelError, match=r"marker 'Other': shares: 'Beads' shares channels itself"):
        load_panel(p)
    p.write_text("name: lab\nscatter:\n  FSC-A: {aliases: [FSC-A], shares: [CD4]}\nmarkers:\n  CD4: {aliases: [CD4]}\n")
    with pytest.raises(PanelError, match=r"marker 'FSC-A' has unknown field\(s\) \['shares'\]"):
        load_panel(p)
