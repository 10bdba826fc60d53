"""A placement-rules file may extend another panel's (``extends: <panel>``): pb_nk_beads is pb_nk
plus counting beads."""

from pathlib import Path

import pytest

from mrdflow.gating import GatingError, load_template, rules_document

GATING = Path(__file__).resolve().parents[2] / "resources" / "gating"


def test_pb_nk_beads_is_pb_nk_plus_the_beads():
    base, beads = rules_document(GATING / "pb_nk.yaml"), rules_document(GATING / "pb_nk_beads.yaml")
    assert set(beads["gates"]) == set(base["gates"]) | {"Beads"}
    assert beads["gates"]["NKG2Apos"] == base["gates"]["NKG2Apos"]
    assert beads["gates"]["Cells"]["Beads.max"]["method"] == "brightest"
    assert beads["expected"]["markers"]["CD159a"] == base["expected"]["markers"]["CD159a"]
    assert beads["expected"]["population"] == base["expected"]["population"]
    assert "Beads" in beads["expected"]["markers"] and "extends" not in beads
    t = load_template(GATING, "pb_nk_beads")
    assert set(t.rules) == set(beads["gates"])


def test_a_missing_or_looping_base_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\ngates: {}\n")
    with pytest.raises(GatingError, match=r"a.yaml: extends 'b', but .*b.yaml does not exist"):
        rules_document(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("extends: a\ngates: {}\n")
    with pytest.raises(GatingError, match="in a loop"):
        rules_document(tmp_path / "a.yaml")
