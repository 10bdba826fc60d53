"""Rule cohort_tables: patients, Table 1, response summary, associations (mrdflow.cohort.write_cohort)."""

from mrdflow.cohort import CohortTableFiles, write_cohort
from mrdflow.config import read_clinical
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
write_cohort(list(smk.input.metrics), read_clinical(smk.input.clinical), config["cohort"],
             CohortTableFiles.from_named(smk.output))
