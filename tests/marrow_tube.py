"""A simulated NGF tube 1 and per-sample settings from a test config, for the sample-stage tests."""
from __future__ import annotations

from pathlib import Path

from mrdflow.config import load_config, resolve_path
from mrdflow.panels import load_panels
from mrdflow.sample import settings_from_config

REPO = Path(__file__).resolve().parents[1]


def ngf1_row(fcs: str, sample_id: str = "PT01_BM_baseline", patient_id: str = "PT01") -> dict:
    """A sample-sheet row of a baseline marrow's NGF tube 1 (the simulator's input)."""
    return {"sample_id": sample_id, "patient_id": patient_id, "specimen": "BM", "visit": "baseline", "day": "-5",
            "infusion": "1", "tube": "ngf1", "panel": "ngf_tube1", "role": "stain", "fmo_marker": "",
            "fcs": fcs, "beads_per_tube": "", "blood_volume_ul": ""}


def settings_without_plots(config_yaml: Path):
    """The per-sample settings of a config (its panels, gating files, reference), plots off."""
    cfg = load_config(config_yaml)
    cfg["sample"]["plots"] = False
    return settings_from_config(cfg, load_panels(resolve_path(cfg["panels_dir"])), resolve_path(cfg["gating_dir"]),
                                workdir=REPO, reference=resolve_path(cfg["clustering"]["reference"]))
