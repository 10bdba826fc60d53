"""Rule cohort_anndata: PC and NK events of the cohort as AnnData (mrdflow.cohort.write_anndata)."""

from mrdflow.cohort import AnnDataFiles, write_anndata
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
write_anndata(list(smk.input.pc_events), list(smk.input.nk_events), dict(smk.params.patient_of),
              smk.input.model or None, smk.input.reference, AnnDataFiles.from_named(smk.output))
