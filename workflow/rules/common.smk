# Configuration, sample sheet and panels: validated once when the workflow is parsed.
import os

from mrdflow.config import read_samples, resolve_path, validate_config
from mrdflow.panels import load_panels

config = validate_config(config, source="config")
PANELS_DIR = resolve_path(config["panels_dir"])
PANELS = load_panels(PANELS_DIR)
_undefined = sorted(set(config["panels"]) - set(PANELS))
if _undefined:
    raise ValueError(f"config: panels: {_undefined} have no definition in {PANELS_DIR}")
SAMPLE_SHEET = resolve_path(config["samples"])
TUBES = read_samples(SAMPLE_SHEET, panels=set(config["panels"]) & set(PANELS))
DATA_DIR = config["data_dir"]
SIMULATED = config["simulate"]["enabled"]


def fcs_path(tube):
    """Path of a tube's FCS file (relative paths in the sheet are under data_dir)."""
    return os.path.join(DATA_DIR, tube.fcs)


def existing_fcs(wildcards=None):
    """FCS inputs of the inventory: simulated ones as rule outputs, real ones only where they exist
    (a missing file is reported in the inventory rather than stopping the workflow)."""
    paths = [fcs_path(t) for t in TUBES]
    return paths if SIMULATED else [p for p in paths if os.path.exists(p)]
