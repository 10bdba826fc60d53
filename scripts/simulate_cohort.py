#!/usr/bin/env python
"""Simulate a cohort's FCS files (+ per-file truth) from a sample sheet and a design file.

Command line (also installed as ``mrdflow-simulate``)::

    python scripts/simulate_cohort.py --samples resources/demo/samples.tsv \
        --design resources/demo/design.yaml --out data/demo --jobs 2

Under Snakemake's ``script:`` directive (rule ``simulate_cohort``) the inputs ``samples`` and
``design``, the params ``outdir``, ``seed`` and ``events_scale``, ``threads`` and the log file are
taken from the injected ``snakemake`` object instead of the command line.
"""
import sys

from mrdflow.demo import main


def _from_snakemake(smk) -> int:
    argv = [
        "--samples", str(smk.input.samples),
        "--design", str(smk.input.design),
        "--out", str(smk.params.outdir),
        "--seed", str(smk.params.seed),
        "--events-scale", str(smk.params.events_scale),
        "--jobs", str(max(1, int(smk.threads))),
    ]
    log = list(smk.log)
    if not log:
        return main(argv)
    with open(log[0], "w") as fh:
        old = sys.stderr
        sys.stderr = fh
        try:
            return main(argv)
        finally:
            sys.stderr = old


if __name__ == "__main__":
    if "snakemake" in globals():
        rc = _from_snakemake(globals()["snakemake"])
        if rc:
            sys.exit(rc)
    else:
        sys.exit(main())
