"""Rule script: write results/inventory.tsv (see mrdflow.io). Runs under Snakemake's
`script:` or from the command line: python scripts/inventory.py SAMPLES DATA_DIR PANELS_DIR OUT."""

import logging
import sys

from mrdflow.config import read_samples
from mrdflow.io import inventory, write_inventory
from mrdflow.panels import load_panels


def run(samples: str, data_dir: str, panels_dir: str, out: str, keywords=(), threads: int = 1) -> None:
    panels = load_panels(panels_dir)
    tubes = read_samples(samples, panels=panels)
    rows = inventory(tubes, data_dir, panels, keywords=keywords, threads=threads)
    write_inventory(rows, out)
    bad = [r for r in rows if r.status != "ok"]
    logging.info("inventory: %d files, %d not ok", len(rows), len(bad))
    for r in bad:
        logging.warning("%s/%s: %s: %s", r.sample_id, r.tube, r.status, r.error)


if "snakemake" in globals():
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(
        snakemake.input.samples,
        snakemake.params.data_dir,
        str(snakemake.params.panels_dir),
        snakemake.output[0],
        keywords=snakemake.params.keywords,
        threads=snakemake.threads,
    )
elif __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    run(*sys.argv[1:5])
