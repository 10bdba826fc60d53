"""Rule gate_sample: gate every tube of one sample (mrdflow.sample.analyse_sample)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import sample_settings, setup_logging  # noqa: E402

from mrdflow.config import read_samples, resolve_path, validate_config  # noqa: E402
from mrdflow.sample import analyse_sample  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
os.environ["MRDFLOW_THREADS"] = str(smk.threads)  # the rule's threads bound the chunk workers
setup_logging(smk.log[0])
config = validate_config(smk.config)
tubes = [t for t in read_samples(resolve_path(config["samples"])) if t.sample_id == smk.wildcards.sample]
analyse_sample(smk.wildcards.sample, tubes, smk.params.data_dir, sample_settings(config), Path(smk.output.stage1).parent)
