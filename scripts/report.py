"""Rule report: results/report.html, the self-contained cohort report (mrdflow.cohort.build_report)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import setup_logging  # noqa: E402

from mrdflow.config import validate_config  # noqa: E402
from mrdflow.cohort import build_report  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
config = validate_config(smk.config)
build_report(smk.output[0], results_dir=Path(smk.input.patients).parent.parent, inventory_tsv=smk.input.inventory,
             config=config, sample_sheet=smk.input.samples, clinical_sheet=smk.input.clinical)
