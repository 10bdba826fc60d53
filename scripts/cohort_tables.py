"""Rule cohort_tables: patients, Table 1, response summary, associations (mrdflow.cohort.write_cohort)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import setup_logging  # noqa: E402

from mrdflow.cohort._tables import write_cohort  # noqa: E402
from mrdflow.config import read_clinical, validate_config  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
config = validate_config(smk.config)
write_cohort(list(smk.input.metrics), read_clinical(smk.input.clinical), config["cohort"],
             Path(smk.output.patients).parent)
