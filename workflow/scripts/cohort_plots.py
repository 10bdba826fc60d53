"""Rule cohort_plots: swimmer, CAR-T kinetics, NKG2A vs AUC and MRD figures (mrdflow.cohort.write_cohort_figures)."""

from mrdflow.cohort import FigureFiles, FigureInputs, write_cohort_figures
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
write_cohort_figures(FigureInputs.from_named(smk.input), FigureFiles.from_named(smk.output), lloq=smk.params.lloq)
