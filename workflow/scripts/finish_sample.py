"""Rule finish_sample: aberrant PCs, MRD call and metrics.json (mrdflow.sample.finish_sample)."""

import json
from pathlib import Path

from mrdflow.clustering import PCModel
from mrdflow.rules import sample_settings, setup
from mrdflow.sample import finish_sample

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
finish_sample(
    json.loads(Path(smk.input.stage1).read_text()),
    Path(smk.output.metrics).parent,
    sample_settings(config, reference=smk.params.reference),
    PCModel.load(smk.input.model[0]) if smk.input.model else None,  # marrow samples only
)
