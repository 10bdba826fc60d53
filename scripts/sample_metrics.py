"""Rule sample_metrics: aberrant PCs, MRD call and metrics.json (mrdflow.sample.finish_sample)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rule import sample_settings, setup_logging  # noqa: E402

from mrdflow.clustering import PCModel  # noqa: E402
from mrdflow.config import validate_config  # noqa: E402
from mrdflow.sample import finish_sample  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
config = validate_config(smk.config)
stage1 = json.loads(Path(smk.input.stage1).read_text())
model = PCModel.load(smk.input.model[0]) if smk.input.model else None
finish_sample(stage1, Path(smk.output[0]).parent, sample_settings(config), model)
