"""Rule review_workspace: one review batch as a FlowJo 10 workspace (mrdflow.review.export_batch)."""

from mrdflow.review import ReviewBatch, export_batch
from mrdflow.rules import sample_settings, setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
export_batch(
    ReviewBatch(smk.wildcards.batch, tuple(smk.params.tubes)),
    smk.params.data_dir,
    sample_settings(config, panels_dir=smk.params.panels_dir, gating_dir=smk.params.gating_dir),
    smk.output.wsp,
)
