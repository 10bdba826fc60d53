"""Rule sample_metrics: aberrant PCs, MRD call and metrics.json (mrdflow.sample.finish_sample)."""

import json
from pathlib import Path

from mrdflow.clustering import PCModel
from mrdflow.rules import sample_settings, setup
from mrdflow.sample import finish_sample

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
stage1 = json.loads(Path(smk.input.stage1).read_text())
model = PCModel.load(smk.input.model[0]) if smk.input.model else None
finish_sample(stage1, Path(smk.output[0]).parent, sample_settings(config), model)
