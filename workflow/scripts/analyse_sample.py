"""Rule analyse_sample: gate every tube of one sample (mrdflow.sample.analyse_sample)."""

import os
from pathlib import Path

from mrdflow.config import read_samples
from mrdflow.rules import sample_settings, setup
from mrdflow.sample import analyse_sample

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
os.environ["MRDFLOW_THREADS"] = str(smk.threads)  # the rule's threads bound the chunk workers
config = setup(smk)
sample = smk.wildcards.sample
analyse_sample(
    sample,
    [t for t in read_samples(smk.params.samples) if t.sample_id == sample],
    smk.params.data_dir,
    sample_settings(config, panels_dir=smk.params.panels_dir, gating_dir=smk.params.gating_dir,
                    compiled_dir=smk.params.compiled_dir),
    Path(smk.output.stage1).parent,
)
