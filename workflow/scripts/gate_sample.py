"""Rule gate_sample: gate every tube of one sample (mrdflow.sample.analyse_sample)."""

import os
from pathlib import Path

from mrdflow.config import read_samples, resolve_path
from mrdflow.rules import sample_settings, setup
from mrdflow.sample import analyse_sample

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
os.environ["MRDFLOW_THREADS"] = str(smk.threads)  # the rule's threads bound the chunk workers
config = setup(smk)
tubes = [t for t in read_samples(resolve_path(config["samples"])) if t.sample_id == smk.wildcards.sample]
analyse_sample(smk.wildcards.sample, tubes, smk.params.data_dir, sample_settings(config), Path(smk.output.stage1).parent)
