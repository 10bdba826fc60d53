"""Rule pc_model: fit the cohort PC model on dask (mrdflow.clustering.fit_pc_model)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import setup_logging  # noqa: E402

from mrdflow.clustering import ClusteringSettings, fit_pc_model, load_reference  # noqa: E402
from mrdflow.config import validate_config  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
config = validate_config(smk.config)
settings = ClusteringSettings(**{k: v for k, v in config["clustering"].items() if k != "reference"})
model = fit_pc_model(list(smk.input.pc_events), load_reference(smk.input.reference), settings)
model.save(smk.output[0])
