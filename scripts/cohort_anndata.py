"""Rule cohort_anndata: PC and NK events of the cohort as AnnData (mrdflow.cohort.write_anndata)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import setup_logging  # noqa: E402

from mrdflow.cohort._tables import write_anndata  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_anndata(list(smk.input.pc_events), list(smk.input.nk_events), dict(smk.params.patient_of),
              smk.input.model or None, smk.input.reference, smk.output.pc, smk.output.nk)
