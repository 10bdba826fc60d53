"""Rule review_changes: the review audit table (mrdflow.review.write_changes)."""

import json
from pathlib import Path

from mrdflow.review import write_changes
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)  # logging; the config is not read
write_changes([json.loads(Path(p).read_text()) for p in smk.input.metrics], list(smk.params.problems),
              Path(smk.output.changes).parent)
