# Configuration, sample sheet and panels: validated once when the workflow is parsed.
import os

from mrdflow.config import read_clinical, read_samples, resolve_path, validate_config
from mrdflow.panels import load_panels
# Output files, each named once in its stage's package:
from mrdflow.clustering import PC_MODEL_JSON as PC_MODEL  # the cohort PC model (rule fit_pc_model)
from mrdflow.io import INVENTORY_TSV  # the FCS inventory (rule inventory)
from mrdflow.sample import sample_file  # a sample's files (mrdflow.sample._outputs)

config = validate_config(config, source="config")
PANELS_DIR = resolve_path(config["panels_dir"])
PANELS = load_panels(PANELS_DIR)
_undefined = sorted(set(config["panels"]) - set(PANELS))
if _undefined:
    raise ValueError(f"config: panels: {_undefined} have no definition in {PANELS_DIR}")
SAMPLE_SHEET = resolve_path(config["samples"])
CONFIG_PANELS = {name: PANELS[name] for name in config["panels"]}  # the panels the config sets up
for _panel in CONFIG_PANELS.values():
    if _panel.readout is None:
        logger.warning(f"panel {_panel.name!r} ({_panel.source}) has no 'readout:' (pc_mrd, nk or cart): "
                       "its tubes are gated and counted but feed no read-out")
TUBES = read_samples(SAMPLE_SHEET, panels=CONFIG_PANELS)
CLINICAL_SHEET = resolve_path(config["clinical"])
CLINICAL = read_clinical(CLINICAL_SHEET, sample_patients={t.patient_id for t in TUBES})
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

GATING_DIR = resolve_path(config["gating_dir"])
PC_REFERENCE = resolve_path(config["clustering"]["reference"])  # the normal-PC reference phenotype
SAMPLES = list(dict.fromkeys(t.sample_id for t in TUBES))
TUBES_OF = {s: [t for t in TUBES if t.sample_id == s] for s in SAMPLES}
# Marrow samples: a tube whose panel feeds the plasma-cell / MRD read-out (panel `readout: pc_mrd`).
BM_SAMPLES = [s for s in SAMPLES if any(PANELS[t.panel].readout == "pc_mrd" for t in TUBES_OF[s])]


wildcard_constraints:
    sample="|".join(SAMPLES) if SAMPLES else "[^/]+",


def sample_fcs(wildcards):
    """The sample's FCS files (missing ones are left out: the sample records the error)."""
    paths = [fcs_path(t) for t in TUBES_OF[wildcards.sample]]
    return paths if SIMULATED else [p for p in paths if os.path.exists(p)]


#: The run's compiled gating templates, written by compile_template and read by the sample jobs without FlowKit.
COMPILED_DIR = "results/templates"


def sample_templates(wildcards):
    """The compiled templates of the sample's panels; a panel gated from a FlowJo workspace reads
    that (and its Gating-ML files stay inputs, as the workspace's fallback)."""
    panels = sorted({t.panel for t in TUBES_OF[wildcards.sample]})
    out = []
    for p in panels:
        if (config["panels"].get(p) or {}).get("workspace"):
            out += [os.path.join(GATING_DIR, f"{p}.{ext}") for ext in ("xml", "yaml")]
        else:
            out.append(os.path.join(COMPILED_DIR, f"{p}.json"))
    return out


def template_sources(wildcards):
    """A panel's Gating-ML template and its rules files, the panels its rules ``extends`` included
    (a rules file that cannot be read is listed alone: compile_template reports it, naming it)."""
    from mrdflow.gating import GatingError, rules_files

    xml, rules = os.path.join(GATING_DIR, f"{wildcards.panel}.xml"), os.path.join(GATING_DIR, f"{wildcards.panel}.yaml")
    if not os.path.isfile(rules):
        return [xml]
    try:
        return [xml, *map(str, rules_files(rules))]
    except GatingError:
        return [xml, rules]


def _tube_size(path):
    """(MB of FCS, events) of one tube; events None when the header cannot be read (the sample
    records that error; resources are then asked as if the file were read whole)."""
    from mrdflow.io import FCSReadError, read_header

    size_mb = os.path.getsize(path) / 1e6
    try:
        return size_mb, read_header(path).n_events
    except FCSReadError:
        return size_mb, None


def _gated_mb(path):
    """MB of a tube's events that gating holds at once: the whole file, or for a tube above
    sample.placement_events its placement sample, the PC gate's candidate events (at most
    max(2 x placement_events, 10^6), as mrdflow.gating.gate_tube_streamed collects them) and one
    2^20-event chunk (it is streamed)."""
    size_mb, n = _tube_size(path)
    placement = config["sample"]["placement_events"]
    if n is None or n <= placement:
        return size_mb
    held = min(placement, n) + min(max(2 * placement, 1_000_000), n) + (1 << 20)
    return size_mb * min(held, n) / n


def sample_mem_mb(wildcards, input, attempt):
    """Memory (MB) from the input: 4x the events gating holds (float32 events plus working
    columns; measured peak 0.48 GB for a streamed 10^7-event tube, 1.54 GB for one read whole),
    at least 1 GB, larger on a retry. A streamed tube counts as its placement sample, so memory
    stops growing with tube size."""
    held = sum(_gated_mb(f) for f in input.fcs if os.path.exists(f))
    return int(max(1000, 4 * held) * attempt)


def sample_runtime(wildcards, input, attempt):
    """Minutes from the input: 10 fixed plus 3 s per 10^6 events (about 4x the measured 0.76 s
    at 10^7 events a tube on 2 CPUs, for slower nodes and file systems), longer on a retry."""
    events = 0
    for f in input.fcs:
        if os.path.exists(f):
            size_mb, n = _tube_size(f)
            events += n if n is not None else size_mb * 1e6 / 48  # 12 float32 channels an event
    return int((10 + 3 * events / 1e6 / 60) * attempt) + 1


def metrics_mem_mb(wildcards, input, attempt):
    """Memory (MB) of sample_metrics: the sample's PC events (the .npz members' uncompressed size,
    read from its zip directory) four times over (the events, their backbone columns, float64
    mapping chunks, the aberrant flags) plus 600 MB of interpreter and libraries; at least 1000 MB,
    larger on a retry. A high-burden marrow keeps tens of millions of PC events."""
    import zipfile

    raw_mb = 0.0
    if os.path.exists(input.pc_events):
        try:
            with zipfile.ZipFile(input.pc_events) as z:
                raw_mb = sum(i.file_size for i in z.infolist()) / 1e6
        except (OSError, zipfile.BadZipFile):
            raw_mb = os.path.getsize(input.pc_events) / 1e6
    return int(max(1000, 600 + 4 * raw_mb) * attempt)


def sample_threads(wildcards, input):
    """2 threads for samples of 100 MB of FCS or more (about 10^6 events a tube and up, where row
    chunks in parallel pay off), else 1: small samples run better side by side."""
    size_mb = sum(os.path.getsize(f) for f in input.fcs if os.path.exists(f)) / 1e6
    return 2 if size_mb >= 100 else 1


def sample_model(wildcards):
    return [PC_MODEL] if wildcards.sample in BM_SAMPLES else []

from mrdflow.cohort import COHORT_FIGURES  # cohort figure stems, named once in mrdflow.cohort._outputs

# The FlowJo review loop (mrdflow.review; its rules are in review.smk). The batches written out for
# review, and the tubes the reviewers' saved workspaces hold (read here, cheaply, so only their
# samples are redone). What cannot be used is logged, listed in results/review/problems.tsv and
# shown in the report; the rest of the cohort goes on.
from mrdflow.review import CHANGES_TSV, PROBLEMS_TSV, REVIEW_DIR, index_reviews, review_batches
from mrdflow.sample import reviewed_file

try:
    REVIEW_BATCHES = review_batches(TUBES, config["review"]["batches"], CONFIG_PANELS)
except ValueError as _e:
    raise ValueError(f"config: {_e}") from None
_BATCH_OF = {t.key: b.name for b in REVIEW_BATCHES.values() for t in b.tubes}


def _export_of(tube):
    """The batch export holding the tube (what a reviewed workspace is compared with)."""
    batch = _BATCH_OF.get(tube.key)
    return os.path.join(REVIEW_DIR, f"{batch}.wsp") if batch else None


def _flagged(sample):
    """Placement flagged the sample (its data-driven stage1.json lists review_needed)."""
    import json

    path = sample_file("stage1", sample)
    try:
        with open(path) as fh:
            return bool(json.load(fh).get("review_needed"))
    except (OSError, ValueError):
        return True  # not gated yet: the review is what settles it


REVIEW = index_reviews([str(resolve_path(p)) for p in config["review"]["workspaces"]], TUBES,
                       export_of=_export_of, flagged=_flagged)
for _problem in REVIEW.problems:
    logger.warning(f"review: {_problem}")
if REVIEW.unchanged:
    logger.info(f"review: {len(REVIEW.unchanged)} sample(s) in the review workspaces are as exported and not "
                "flagged: not redone")


def stage_file(name, sample):
    """A sample's stage-1 file as its read-outs use it: the one remade with a reviewer's gates when
    a review workspace holds a tube of the sample, else the data-driven one."""
    return reviewed_file(name, sample) if REVIEW.of(sample) else sample_file(name, sample)
