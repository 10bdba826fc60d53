"""Rule inventory: results/inventory.tsv, one row per FCS file (mrdflow.io.inventory)."""

import logging

from mrdflow.config import read_samples
from mrdflow.io import inventory, write_inventory
from mrdflow.panels import load_panels
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
panels = load_panels(str(smk.params.panels_dir))
rows = inventory(read_samples(smk.input.samples, panels=panels), smk.params.data_dir, panels,
                 keywords=smk.params.keywords, threads=smk.threads)
write_inventory(rows, smk.output.inventory)
bad = [r for r in rows if r.status != "ok"]
logging.info("inventory: %d files, %d not ok", len(rows), len(bad))
for r in bad:
    logging.warning("%s/%s: %s: %s", r.sample_id, r.tube, r.status, r.error)
