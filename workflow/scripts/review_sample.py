"""Rule review_sample: a sample gated again with a reviewer's gates (mrdflow.review.review_sample)."""

import os
from pathlib import Path

from mrdflow.config import read_samples
from mrdflow.review import ReviewedTube, review_sample
from mrdflow.rules import sample_settings, setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
os.environ["MRDFLOW_THREADS"] = str(smk.threads)
config = setup(smk)
sample = smk.wildcards.sample
review_sample(
    sample,
    [t for t in read_samples(smk.params.samples) if t.sample_id == sample],
    smk.params.data_dir,
    sample_settings(config, panels_dir=smk.params.panels_dir, gating_dir=smk.params.gating_dir),
    [ReviewedTube(**r) for r in smk.params.reviewed],
    Path(smk.input.stage1).parent,
)
