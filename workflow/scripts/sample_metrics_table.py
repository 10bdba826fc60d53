"""Rule sample_metrics_table: results/cohort/sample_metrics.tsv (mrdflow.cohort)."""

from mrdflow.cohort import sample_metrics_rows, write_table
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
write_table(sample_metrics_rows(smk.input.metrics), smk.output.sample_metrics)
