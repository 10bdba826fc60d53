"""Rule cohort_plots: swimmer, CAR-T kinetics, NKG2A vs AUC and MRD figures (mrdflow.cohort)."""

from pathlib import Path

from mrdflow.cohort._tables import write_cohort_figures
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
write_cohort_figures(smk.input.patients, smk.input.kinetics, smk.input.mrd, smk.input.associations,
                     Path(smk.output[0]).parent, lloq=smk.params.lloq)
