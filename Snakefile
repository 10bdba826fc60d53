# mrdflow: FCS -> sample (QC, gates, metrics) -> cohort (join, statistics, report).
# The default config is the simulated demo cohort; see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/io.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/clustering.smk"
include: "workflow/rules/cohort.smk"


rule all:
    input:
        "results/inventory.tsv",
        "results/cohort/sample_metrics.tsv",
        "results/cohort/patients.tsv",
        "results/cohort/associations.tsv",
        "results/cohort/pc_events.h5ad",
        expand("results/cohort/plots/{fig}.png", fig=COHORT_FIGURES),
        "results/report.html",
        # per-sample contract outputs are final outputs, not intermediates: a lost one is remade
        expand("results/samples/{sample}/{name}", sample=SAMPLES, name=("metrics.json", "gating.tsv", "gates.xml")),
    default_target: True
