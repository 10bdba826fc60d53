"""Rule cohort_plots: swimmer, CAR-T kinetics, NKG2A vs AUC and MRD figures (mrdflow.cohort)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import setup_logging  # noqa: E402

from mrdflow.cohort._tables import write_cohort_figures  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_cohort_figures(smk.input.patients, smk.input.kinetics, smk.input.mrd, smk.input.associations,
                     Path(smk.output[0]).parent, lloq=smk.params.lloq)
