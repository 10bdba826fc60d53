# Report: results/report.html, one self-contained HTML file (figures embedded, gating plots linked),
# built from the cohort tables and figures (mrdflow.cohort). It is also registered for
# `snakemake --report` (category "Report").


rule report:
    input:
        patients="results/cohort/patients.tsv",
        table1="results/cohort/table1.tsv",
        response="results/cohort/response_summary.tsv",
        associations="results/cohort/associations.tsv",
        mrd="results/cohort/mrd.tsv",
        kinetics="results/cohort/kinetics.tsv",
        sample_metrics="results/cohort/sample_metrics.tsv",
        figures=expand("results/cohort/plots/{fig}.png", fig=COHORT_FIGURES),
        inventory="results/inventory.tsv",
        samples=SAMPLE_SHEET,
        clinical=CLINICAL_SHEET,
        metrics=expand("results/samples/{sample}/metrics.json", sample=SAMPLES),
    output:
        report("results/report.html", caption="../report/report.rst", category="Report"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/cohort/report.log",
    script:
        "../../scripts/report.py"
