# Cohort stage (mrdflow.cohort): per-sample metrics joined with the clinical sheet into tables,
# statistics, AnnData, figures and the self-contained report.


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
        "../scripts/sample_metrics_table.py"


rule cohort_tables:
    input:
        metrics=expand("results/samples/{sample}/metrics.json", sample=SAMPLES),
        clinical=CLINICAL_SHEET,
    output:
        patients="results/cohort/patients.tsv",
        patients_parquet="results/cohort/patients.parquet",
        kinetics="results/cohort/kinetics.tsv",
        mrd="results/cohort/mrd.tsv",
        table1="results/cohort/table1.tsv",
        table1_html=report("results/cohort/table1.html", caption="../report/table1.rst", category="Cohort tables"),
        response="results/cohort/response_summary.tsv",
        associations="results/cohort/associations.tsv",
        samples_parquet="results/cohort/sample_metrics.parquet",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    log:
        "logs/cohort/cohort_tables.log",
    script:
        "../scripts/cohort_tables.py"


rule cohort_anndata:
    input:
        pc_events=expand("results/samples/{sample}/pc_events.npz", sample=BM_SAMPLES),
        nk_events=expand("results/samples/{sample}/nk_events.npz", sample=SAMPLES),
        model="results/cohort/pc_model.json" if BM_SAMPLES else [],
        reference=resolve_path(config["clustering"]["reference"]),
    output:
        pc="results/cohort/pc_events.h5ad",
        nk="results/cohort/nk_events.h5ad",
    params:
        patient_of={s: TUBES_OF[s][0].patient_id for s in SAMPLES},
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        "logs/cohort/cohort_anndata.log",
    script:
        "../scripts/cohort_anndata.py"


rule cohort_plots:
    input:
        patients="results/cohort/patients.tsv",
        kinetics="results/cohort/kinetics.tsv",
        mrd="results/cohort/mrd.tsv",
        associations="results/cohort/associations.tsv",
    output:
        # PNGs are registered for `snakemake --report`; SVGs are the publication copies.
        *[report(f"results/cohort/plots/{fig}.png", caption=f"../report/{fig}.rst", category="Cohort figures")
          for fig in COHORT_FIGURES],
        expand("results/cohort/plots/{fig}.svg", fig=COHORT_FIGURES),
    params:
        lloq=config["cohort"]["cart_lloq_cells_per_ul"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/cohort/cohort_plots.log",
    script:
        "../scripts/cohort_plots.py"


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
        "../scripts/report.py"
