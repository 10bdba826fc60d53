"""A gate placement is unsure of marks every read-out that rests on it: listed in ``review_needed``,
the sample's status never plain ``ok``, the value kept (mrdflow.sample._review and the sample stage)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from marrow_tube import ngf1_row, settings_without_plots

from mrdflow.config import Tube
from mrdflow.gating import load_template
from mrdflow.metrics import GateReview, read_metrics
from mrdflow.sample import analyse_sample, finish_sample
from mrdflow.sample._review import TubeReview, gate_dependencies, gate_evidence, gate_reviews, review_needed

REPO = Path(__file__).resolve().parents[2]
GATING = REPO / "resources" / "gating"
WHY = "PC: CD38.min 0.800 on its search window's edge [0.60, 0.80]"


@pytest.fixture(scope="module")
def deps():
    return {p: gate_dependencies(load_template(GATING, p)) for p in ("ngf_tube1", "ngf_tube2", "pb_nk", "pb_cart")}


def test_dependencies_follow_the_template(deps):
    assert deps["ngf_tube1"]["PC"] == {"PC", "Nucleated", "Singlets", "TimeOK"}
    assert deps["ngf_tube2"]["PC_kappa"] >= {"PC_kappa", "PC", "Nucleated"}
    assert {"CD56pos", "CD16pos"} <= deps["pb_nk"]["NK"]  # a boolean gate's operands
    assert "Tcells" in deps["pb_nk"]["NKG2Apos"]  # the floor's population (the internal negative)
    assert deps["pb_cart"]["Beads"] == {"Beads", "TimeOK"}


def _review(tube, feeds, deps, *gates):
    return TubeReview(tube, feeds, deps, tuple(GateReview(g, f"{g}: unsure") for g in gates))


def test_readouts_on_an_unsure_gate(deps):
    items = review_needed([_review("ngf1", "pc_mrd", deps["ngf_tube1"], "PC"),
                           _review("ngf2", "pc_mrd", deps["ngf_tube2"])])
    assert [(i.readout, i.tube, i.gate) for i in items] == [
        ("PC %", "ngf1", "PC"), ("aberrant PCs", "ngf1", "PC"), ("MRD call", "ngf1", "PC")]
    # a hemodilution gate marks the MRD call alone; an ancestor marks everything below it
    assert [i.readout for i in review_needed([_review("ngf1", "pc_mrd", deps["ngf_tube1"], "MastCells")])] == [
        "MRD call"]
    assert [i.readout for i in review_needed([_review("ngf2", "pc_mrd", deps["ngf_tube2"], "Nucleated")])] == [
        "PC %", "aberrant PCs", "MRD call", "κ/λ"]
    assert [i.readout for i in review_needed([_review("nk", "nk", deps["pb_nk"], "Tcells")])] == ["NKG2A %"]
    assert [i.readout for i in review_needed([_review("cart", "cart", deps["pb_cart"], "Beads")])] == [
        "CAR-T cells/µL"]
    # a gate no read-out rests on marks none; one the template does not know marks every read-out
    assert review_needed([_review("ngf2", "pc_mrd", deps["ngf_tube2"], "NRBC")]) == []
    assert [i.readout for i in review_needed([_review("ngf1", "pc_mrd", deps["ngf_tube1"], "TubeLevel")])] == [
        "PC %", "aberrant PCs", "MRD call"]
    assert review_needed([_review("ngf1", "pc_mrd", deps["ngf_tube1"])]) == []


class _Evidence:
    def as_dict(self):
        return {"method": "valley", "value": 0.8, "window": [0.6, 0.8], "edge_distance": 0.0, "valley_depth": None,
                "prominence": None, "density_ratio": 0.7, "fallback": None, "sure": False, "reason": "on the edge"}


def test_evidence_and_reviews_read_defensively():
    sure = SimpleNamespace(gate_id="Nucleated")  # a step from before gate evidence existed
    unsure = SimpleNamespace(gate_id="PC", evidence={"CD38.min": _Evidence()}, review=WHY)
    g = SimpleNamespace(steps=[sure, unsure])
    assert gate_evidence(g) == {"PC": {"CD38.min": _Evidence().as_dict()}}
    assert gate_reviews(g) == (GateReview("PC", WHY),)
    g.reviews = lambda: [("PC", "from the gating")]
    assert gate_reviews(g) == (GateReview("PC", "from the gating"),)


@pytest.fixture(scope="module")
def marrow(tmp_path_factory):
    """A simulated NGF tube 1 (tiny design, 20,000 events) and the per-sample settings."""
    from mrdflow.demo import load_design, simulate_file

    d = tmp_path_factory.mktemp("review")
    simulate_file(ngf1_row("ngf1.fcs"), load_design(REPO / "config" / "test" / "design.yaml"), d)
    return d, settings_without_plots(REPO / "config" / "test" / "config.yaml")


def _run(marrow, out: Path, monkeypatch, unsure: dict[str, str]) -> dict:
    """Both stages on the tube, with placement's reviews replaced by ``unsure`` (gate -> reason):
    the gating is the real one, only its verdict is hand-made."""
    import mrdflow.sample._analysis as analysis

    real = analysis._gate

    def gate(*args, **kw):
        g = real(*args, **kw)
        for step in g.steps:
            step.review = unsure.get(step.gate_id)
        return g

    monkeypatch.setattr(analysis, "_gate", gate)
    tube = Tube(sample_id="S", patient_id="PT01", specimen="BM", visit="baseline", day=-5, infusion=1, tube="ngf1",
                panel="ngf_tube1", role="stain", fcs="ngf1.fcs")
    folder, settings = marrow
    stage1 = analyse_sample("S", [tube], folder, settings, out)
    assert json.loads((out / "stage1.json").read_text())["review_needed"] == stage1["review_needed"]
    return finish_sample(stage1, out, settings, None)


def test_an_unsure_pc_gate_marks_pc_pct_and_the_mrd_call(marrow, tmp_path, monkeypatch):
    sure = _run(marrow, tmp_path / "sure", monkeypatch, {})
    flagged = _run(marrow, tmp_path / "flagged", monkeypatch, {"PC": WHY})
    assert sure["status"] == "ok" and sure["review_needed"] == [] and sure["tubes"]["ngf1"]["gate_review"] == []
    assert sure["pc"]["review_needed"] is False and sure["mrd"]["review_needed"] is False
    assert flagged["tubes"]["ngf1"]["gate_review"] == [{"gate": "PC", "reason": WHY}]
    assert [(r["readout"], r["gate"], r["tube"]) for r in flagged["review_needed"]] == [
        ("PC %", "PC", "ngf1"), ("aberrant PCs", "PC", "ngf1"), ("MRD call", "PC", "ngf1")]
    assert all(r["reason"] == WHY for r in flagged["review_needed"])
    assert flagged["status"] == "review"
    assert flagged["mrd"]["review_needed"] is True and WHY in flagged["mrd"]["review_reason"]
    assert flagged["pc"]["review_needed"] is True and "ngf1 PC" in flagged["pc"]["review_reason"]
    # the numbers stand, marked: nothing but the marks differs
    for section in ("pc", "mrd"):
        strip = ("review_needed", "review_reason")
        assert {k: v for k, v in flagged[section].items() if k not in strip} == \
            {k: v for k, v in sure[section].items() if k not in strip}
    assert flagged["pc"]["pc_pct"] is not None
    back = read_metrics(tmp_path / "flagged" / "metrics.json")  # the schema takes it, and it reads back
    assert back.status == "review" and back.review_needed[0].readout == "PC %" and back.mrd.review_needed


def test_evidence_of_every_placed_bound_is_recorded(marrow, tmp_path, monkeypatch):
    m = _run(marrow, tmp_path, monkeypatch, {})
    gates = m["tubes"]["ngf1"]["gates"]
    import mrdflow.gating as gating

    if not hasattr(gating, "BoundEvidence"):
        pytest.skip("placement does not record evidence yet (mrdflow.gating.BoundEvidence)")
    assert "PC" in gates and {"CD38.min", "CD138.min"} <= set(gates["PC"])
    ev = gates["PC"]["CD38.min"]
    assert {"method", "edge_distance", "density_ratio", "sure"} <= set(ev) and ev["window"][0] <= ev["value"]
