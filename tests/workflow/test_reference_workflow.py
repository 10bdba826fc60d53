"""The lab step end to end: a normal-PC reference built from two tiny simulated normal marrows
(scripts/build_normal_pc_reference.py), then the whole DAG on the tiny test cohort with
``clustering.reference`` pointing at it."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from clustering.normal_marrows import build_tiny_reference

REPO = Path(__file__).resolve().parents[2]
TEST_CONFIG = REPO / "config" / "test" / "config.yaml"
pytestmark = pytest.mark.workflow


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """(work folder, reference file): the reference built first, then the tiny cohort run with it."""
    reference = build_tiny_reference(tmp_path_factory.mktemp("normal_pc"))
    work = tmp_path_factory.mktemp("tiny_with_reference")
    clustering = yaml.safe_load(TEST_CONFIG.read_text())["clustering"]
    override = work / "reference.yaml"
    override.write_text(yaml.safe_dump({"clustering": {**clustering, "reference": str(reference)}}))
    r = _snakemake(work, "--cores", "2", "--configfile", str(TEST_CONFIG), str(override))
    # (both files: a second --configfile replaces the first list; later files override earlier keys)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work, reference


def _marrow_samples() -> list[str]:
    with open(TEST_CONFIG.parent / "samples.tsv", newline="") as fh:
        return sorted({r["sample_id"] for r in csv.DictReader(fh, delimiter="\t") if r["specimen"] == "BM"})


def test_workflow_completes_with_metrics_for_every_marrow(reference_run):
    work, _ = reference_run
    marrows = _marrow_samples()
    assert len(marrows) == 5  # baseline and week 4 of PT01 and PT08, and PT01 at day 90
    for s in marrows:
        m = json.loads((work / "results" / "samples" / s / "metrics.json").read_text())
        assert m["status"] == "ok", (s, m.get("errors"))
        assert m["pc"]["pc_pct"] is not None and m["pc"]["n_aberrant_pc"] is not None, s
        assert m["mrd"]["mrd_status"] in ("positive", "negative", "not_evaluable"), s
        assert m["mrd"]["n_nucleated"] > 0, s
    with open(work / "results" / "cohort" / "sample_metrics.tsv", newline="") as fh:
        assert set(marrows) <= {r["sample_id"] for r in csv.DictReader(fh, delimiter="\t")}


def test_pc_model_was_labelled_with_the_built_reference(reference_run):
    """The model's cluster distances are those the built reference gives (not the committed one's)."""
    from mrdflow.clustering import PCModel, label_clusters, load_reference

    work, reference = reference_run
    model = PCModel.load(work / "results" / "cohort" / "pc_model.json")
    ref = load_reference(reference)
    labels = label_clusters(model.centers, np.array([lab.n_fit for lab in model.labels]),
                            np.array([lab.kappa for lab in model.labels]),
                            np.array([lab.lambda_ for lab in model.labels]), ref, model.settings)
    assert [lab.distance for lab in labels] == pytest.approx([lab.distance for lab in model.labels], rel=1e-9)
    assert [lab.aberrant for lab in labels] == [lab.aberrant for lab in model.labels]
    assert any(lab.aberrant for lab in labels)  # the patients' tumour PCs


def test_mrd_calls_hold_with_the_built_reference(reference_run):
    """The tiny cohort's week-4 calls (as with the committed reference): PT08's planted aberrant
    PCs are found; PT01's tubes are too small for 10^-5, never negative."""
    work, _ = reference_run
    for s, expected in (("PT01_BM_week4", "not_evaluable"), ("PT08_BM_week4", "positive")):
        m = json.loads((work / "results" / "samples" / s / "metrics.json").read_text())
        assert m["mrd"]["mrd_status"] == expected, (s, m["mrd"].get("mrd_reason"))
