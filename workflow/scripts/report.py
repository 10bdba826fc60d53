"""Rule report: results/report.html, the self-contained cohort report (mrdflow.cohort.build_report)."""

from pathlib import Path

from mrdflow.cohort import build_report
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
build_report(smk.output[0], results_dir=Path(smk.input.patients).parent.parent, inventory_tsv=smk.input.inventory,
             config=config, sample_sheet=smk.input.samples, clinical_sheet=smk.input.clinical)
