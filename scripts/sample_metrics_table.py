"""Rule sample_metrics_table: results/cohort/sample_metrics.tsv (mrdflow.cohort)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import setup_logging  # noqa: E402

from mrdflow.cohort import sample_metrics_rows, write_table  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_table(sample_metrics_rows(smk.input), smk.output[0])
