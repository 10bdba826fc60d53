# Cohort tables (mrdflow.cohort): per-sample metrics flattened into one table.


rule sample_metrics_table:
    input:
        expand("results/samples/{sample}/metrics.json", sample=SAMPLES),
    output:
        "results/cohort/sample_metrics.tsv",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/cohort/sample_metrics_table.log",
    script:
        "../../scripts/sample_metrics_table.py"
