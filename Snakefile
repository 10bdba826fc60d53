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
include: "workflow/rules/review.smk"
include: "workflow/rules/cohort.smk"


rule all:
    input:
        INVENTORY_TSV,
        COHORT_SAMPLE_METRICS.sample_metrics,
        COHORT_TABLES.patients,
        COHORT_TABLES.associations,
        COHORT_ANNDATA.pc,
        COHORT_PLOTS.png,
        REPORT_HTML,
        CHANGES_TSV,
        # per-sample contract outputs are final outputs, not intermediates: a lost one is remade
        [sample_file(name, s) for s in SAMPLES for name in ("metrics", "gating", "gates")],
    default_target: True


# `snakemake review`: every review batch as a FlowJo 10 workspace (results/review/<batch>.wsp).
rule review:
    input:
        expand(f"{REVIEW_DIR}/{{batch}}.wsp", batch=list(REVIEW_BATCHES)),
