"""Rule compile_template: a panel's Gating-ML template and rules, parsed once (FlowKit) into JSON
the sample jobs read without FlowKit (mrdflow.gating.compile_template)."""

import json

from mrdflow.atomic import atomic_open
from mrdflow.gating import compile_template
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)  # logging; the config is not needed here
doc = compile_template(smk.params.gating_dir, smk.wildcards.panel)
with atomic_open(smk.output[0], "w") as fh:
    json.dump(doc, fh, indent=1)
