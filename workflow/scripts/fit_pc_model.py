"""Rule fit_pc_model: fit the cohort PC model on dask (mrdflow.clustering.fit_pc_model)."""

from mrdflow.clustering import ClusteringSettings, fit_pc_model, load_reference
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
settings = ClusteringSettings(**{k: v for k, v in config["clustering"].items() if k != "reference"})
model = fit_pc_model(list(smk.input.pc_events), load_reference(smk.input.reference), settings)
model.save(smk.output.model)
