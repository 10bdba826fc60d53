"""Rule simulate_cohort: the demo/test cohort's FCS files with planted truth (mrdflow.demo.simulate_cohort).

From the command line the same is ``mrdflow-simulate`` (see ``mrdflow-simulate --help``).
"""

import contextlib

from mrdflow.demo import main
from mrdflow.rules import setup

smk = snakemake  # noqa: F821 (injected by Snakemake's script: directive)
config = setup(smk)
argv = ["--samples", str(smk.input.samples), "--design", str(smk.input.design), "--out", str(smk.params.outdir),
        "--seed", str(smk.params.seed), "--events-scale", str(smk.params.events_scale),
        "--jobs", str(max(1, int(smk.threads)))]
for key in ("instrument", "biology"):  # the design's own unless the config names another profile
    if smk.params[key]:
        argv += [f"--{key}", str(smk.params[key])]
with open(smk.log[0], "a") as fh, contextlib.redirect_stderr(fh):
    rc = main(argv)
if rc:
    raise SystemExit(rc)
