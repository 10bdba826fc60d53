"""Rule report: results/report.html, the self-contained cohort report (mrdflow.cohort.build_report)."""

from mrdflow.cohort import ReportInputs, build_report
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
build_report(ReportInputs.from_named(smk.input), smk.output.html, config=config)
