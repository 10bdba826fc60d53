"""Two tiny simulated normal marrows and the normal-PC reference built from them with the lab tool
(scripts/build_normal_pc_reference.py). Shared by tests/clustering/test_reference_builder.py and
tests/workflow/test_reference_workflow.py (``from clustering.normal_marrows import ...``)."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import yaml

from mrdflow.demo import SAMPLE_COLUMNS, load_design, make_samples, simulate_cohort

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_normal_pc_reference.py"
NORMAL_DESIGN = REPO / "resources" / "reference" / "normal_marrow" / "design.yaml"
TEST_CONFIG = REPO / "config" / "test" / "config.yaml"
DONORS = ("ND01", "ND02")  # 0.6% and 1.0% plasma cells, none aberrant
EVENTS = 30000  # per NGF tube: some 160-270 normal PCs each
SEED = 2024  # the committed reference's donors were simulated with this seed


def simulate_normal_marrows(outdir: Path) -> tuple[Path, Path]:
    """Simulate the NGF tubes of two normal donors' marrows (the committed donors' design, fewer
    events).
    Returns (sample sheet, data folder its fcs paths are relative to)."""
    design = load_design(NORMAL_DESIGN)
    design["patients"] = {k: design["patients"][k] for k in DONORS}
    design["events"] = {**design["events"], "bm_baseline": EVENTS}
    outdir.mkdir(parents=True, exist_ok=True)
    design_yaml = outdir / "design.yaml"
    design_yaml.write_text(yaml.safe_dump(design, sort_keys=False))
    sheet = outdir / "samples.tsv"
    with open(sheet, "w", newline="") as fh:
        w = csv.DictWriter(fh, SAMPLE_COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in make_samples(design):
            if r["specimen"] == "BM" and r["visit"] == "baseline":  # the donors' marrow, not week 4
                w.writerow({k: r[k] for k in SAMPLE_COLUMNS})
    data = outdir / "data"
    simulate_cohort(sheet, design_yaml, data, seed=SEED)
    return sheet, data


def reference_tool():
    """The lab tool as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_normal_pc_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny_reference(outdir: Path) -> Path:
    """Simulate the two normal marrows under ``outdir`` and build their reference with the lab tool
    (gated with the test config; each marrow's gating kept under ``outdir/gating``)."""
    sheet, data = simulate_normal_marrows(outdir)
    out = outdir / "normal_pc.yaml"
    rc = reference_tool().main(["--samples", str(sheet), "--data-dir", str(data), "--config", str(TEST_CONFIG),
                                "--out", str(out), "--keep-gating", str(outdir / "gating"), "--no-plots"])
    assert rc == 0, "the reference tool failed"
    return out
