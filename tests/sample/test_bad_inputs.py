"""Bad inputs at the sample stage: each gets a recorded, named answer and never stops the sample's
other tubes (the sheet/config/reader cases are in test_config, test_cohort and test_io)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fcs_bytes import FCSSpec, fcs_bytes
from marrow_tube import ngf1_row, settings_without_plots

from mrdflow.config import Tube
from mrdflow.demo import load_design, simulate_file
from mrdflow.io import read_fcs, write_fcs
from mrdflow.metrics import read_metrics
from mrdflow.sample import analyse_sample, finish_sample

REPO = Path(__file__).resolve().parents[2]
STRUCTURAL = {"$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINDATA", "$ENDDATA", "$BEGINSTEXT", "$ENDSTEXT",
              "$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT"}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A simulated NGF tube 1 (tiny design, 20,000 events) and the per-sample settings."""
    d = tmp_path_factory.mktemp("bad_inputs")
    simulate_file(ngf1_row("good.fcs"), load_design(REPO / "config" / "test" / "design.yaml"), d)
    return d, settings_without_plots(REPO / "config" / "test" / "config.yaml")


def _variant(folder: Path, name: str, change) -> str:
    """Write good.fcs again as ``name`` after ``change(values, pnn, pns, meta)`` edited it."""
    src = read_fcs(folder / "good.fcs")
    values, pnn, pns = src.channel_values.copy(), list(src.pnn), list(src.pns)
    meta = {k: v for k, v in src.metadata.items() if k.upper() not in STRUCTURAL}
    values = change(values, pnn, pns, meta)
    write_fcs(folder / name, values, pnn, pns, metadata=meta)
    return name


def _tube(fcs: str, tube: str = "ngf1") -> Tube:
    return Tube(sample_id="S", patient_id="PT01", specimen="BM", visit="baseline", day=-5, infusion=1, tube=tube,
                panel="ngf_tube1", role="stain", fcs=fcs)


def _run(good, tubes, tmp_path):
    folder, settings = good
    return analyse_sample("S", tubes, folder, settings, tmp_path / "out")


def _col(pnn, pns, marker):
    return next(i for i, s in enumerate(pns) if s and marker in s)


def test_nan_and_inf_events_are_counted_and_gated_out(good, tmp_path):
    def change(v, pnn, pns, meta):
        v[::40, _col(pnn, pns, "CD38")] = np.nan
        v[1::55, _col(pnn, pns, "CD45")] = np.inf
        return v

    rec = _run(good, [_tube(_variant(good[0], "nan.fcs", change))], tmp_path)
    assert rec["status"] == "ok"
    q = rec["tubes"]["ngf1"]
    assert q["nonfinite_events"] == len(set(range(0, q["events"], 40)) | set(range(1, q["events"], 55)))
    assert rec["counts"]["ngf1"]["pc"] > 0


def test_debris_only_tube_fails_with_the_reason(good, tmp_path):
    def change(v, pnn, pns, meta):
        for j, n in enumerate(pnn):
            if n.startswith(("FSC", "SSC")):
                v[:, j] = np.abs(v[:, j]) * 0.005
        return v

    rec = _run(good, [_tube(_variant(good[0], "debris.fcs", change))], tmp_path)
    assert rec["status"] == "failed"
    assert "debris.fcs: only" in rec["errors"][0]["error"] and "nucleated cells" in rec["errors"][0]["error"]
    _metrics_follow_the_contract(good, tmp_path / "out", "failed")


def test_population_absent_gives_an_empty_gate_not_noise(good, tmp_path):
    def change(v, pnn, pns, meta):
        j = _col(pnn, pns, "CD138")
        v[:, j] = np.random.default_rng(0).normal(0, 30, v.shape[0])  # no CD138+ cells at all
        return v

    rec = _run(good, [_tube(_variant(good[0], "nopc.fcs", change))], tmp_path)
    assert rec["status"] == "ok"
    assert rec["counts"]["ngf1"]["pc"] <= 5  # the PC gate stays in its template bounds
    assert rec["counts"]["ngf1"]["nucleated"] > 10000


def test_missing_marker_missing_file_and_zero_events_are_recorded_per_tube(good, tmp_path):
    def rename_cd138(v, pnn, pns, meta):
        j = _col(pnn, pns, "CD138")
        pns[j] = "CD200"
        meta.pop(f"$P{j + 1}S", None)
        return v

    (good[0] / "empty.fcs").write_bytes(fcs_bytes(FCSSpec(np.zeros((0, 3), np.float32))))
    tubes = [_tube(_variant(good[0], "nocd138.fcs", rename_cd138), "a"), _tube("absent.fcs", "b"),
             _tube("empty.fcs", "c"), _tube("good.fcs", "d")]
    rec = _run(good, tubes, tmp_path)
    errors = {e["tube"]: e["error"] for e in rec["errors"]}
    assert "CD138" in errors["a"] and "ngf_tube1" in errors["a"]      # panel, marker (and channels)
    assert "absent.fcs" in errors["b"]
    assert "empty.fcs" in errors["c"] and "0 events" in errors["c"]
    assert "d" not in errors and rec["status"] == "partial"
    stage1 = json.loads((tmp_path / "out" / "stage1.json").read_text())
    assert stage1["status"] == "partial" and set(stage1["counts"]) == {"d"}
    _metrics_follow_the_contract(good, tmp_path / "out", "partial")


def _metrics_follow_the_contract(good, outdir: Path, status: str) -> None:
    """Stage 2 (no PC model) of a failed or partial sample writes a metrics.json that follows
    metrics.schema.yaml, with the errors and the status carried over."""
    stage1 = json.loads((outdir / "stage1.json").read_text())
    m = finish_sample(stage1, outdir, good[1], None)
    back = read_metrics(outdir / "metrics.json")
    assert back.as_dict() == m and back.status == status and len(back.errors) == len(stage1["errors"])
    assert back.mrd is not None and back.mrd.mrd_status == "not_evaluable" and back.mrd.call is None


def test_bad_spillover_is_recorded_with_the_cause(good, tmp_path):
    def foreign_channel(v, pnn, pns, meta):
        key = "$SPILLOVER" if "$SPILLOVER" in meta else "SPILL"
        parts = meta[key].split(",")
        parts[1] = "BUV999-A"  # a detector this file does not have
        meta[key] = ",".join(parts)
        return v

    def singular(v, pnn, pns, meta):
        key = "$SPILLOVER" if "$SPILLOVER" in meta else "SPILL"
        parts = meta[key].split(",")
        k = int(parts[0])
        parts[1 + k:] = ["1"] * (k * k)  # every row the same: not invertible
        meta[key] = ",".join(parts)
        return v

    tubes = [_tube(_variant(good[0], "foreign.fcs", foreign_channel), "a"),
             _tube(_variant(good[0], "singular.fcs", singular), "b"), _tube("good.fcs", "c")]
    rec = _run(good, tubes, tmp_path)
    errors = {e["tube"]: e["error"] for e in rec["errors"]}
    assert "foreign.fcs" in errors["a"] and "BUV999-A" in errors["a"] and "lacks" in errors["a"]
    assert "singular.fcs" in errors["b"] and "singular" in errors["b"].split("singular.fcs")[1]
    assert rec["status"] == "partial" and "c" in rec["counts"]


def test_a_labs_own_panel_feeds_the_readout_it_names(good, tmp_path):
    """The read-outs follow the panel's ``readout:``, not its name: the same tube under a lab's own
    panel name (same markers and gates) gives the same marrow counts with ``readout: pc_mrd``, and
    only its gating without a read-out."""
    import dataclasses
    import shutil

    folder, settings = good
    ngf1 = settings.panels["ngf_tube1"]
    gating = tmp_path / "gating"
    gating.mkdir()
    for name in ("lab_marrow", "lab_gated_only"):
        for ext in ("xml", "yaml"):
            shutil.copy(settings.gating_dir / f"ngf_tube1.{ext}", gating / f"{name}.{ext}")
    panels = {"lab_marrow": dataclasses.replace(ngf1, name="lab_marrow"),
              "lab_gated_only": dataclasses.replace(ngf1, name="lab_gated_only", readout=None)}
    lab = dataclasses.replace(settings, panels=panels, gating_dir=gating,
                              panel_config={p: settings.panel_config["ngf_tube1"] for p in panels})
    ref = analyse_sample("S", [_tube("good.fcs")], folder, settings, tmp_path / "ref")
    rec = analyse_sample("S", [dataclasses.replace(_tube("good.fcs"), panel="lab_marrow")], folder, lab,
                         tmp_path / "lab")
    assert rec["counts"] == ref["counts"] and rec["pc_events"] == "pc_events.npz"
    only = analyse_sample("S", [dataclasses.replace(_tube("good.fcs"), panel="lab_gated_only")], folder, lab,
                          tmp_path / "only")
    assert only["counts"] == {} and only["pc_events"] is None and only["status"] == "ok"
    assert (tmp_path / "only" / "gating.tsv").read_text() == (tmp_path / "ref" / "gating.tsv").read_text()
