# Cohort stage (mrdflow.cohort): per-sample metrics joined with the clinical sheet into tables,
# statistics, AnnData, figures and the self-contained report.
# The stage's file names live once, in mrdflow.cohort (_outputs): each rule's named inputs/outputs are
# a dataclass whose fields are the names and whose defaults are the paths; the rule scripts turn
# snakemake.input/output back into it by name (from_named).
from mrdflow.cohort import (
    COHORT_FIGURES,
    REPORT_HTML,
    AnnDataFiles,
    CohortTableFiles,
    FigureFiles,
    FigureInputs,
    ReportInputs,
    SampleMetricsTable,
)

COHORT_TABLES = CohortTableFiles()
COHORT_SAMPLE_METRICS = SampleMetricsTable()
COHORT_ANNDATA = AnnDataFiles()
COHORT_PLOTS = FigureFiles()


rule sample_metrics_table:
    input:
        metrics=expand(sample_file("metrics"), sample=SAMPLES),
    output:
        **COHORT_SAMPLE_METRICS.as_dict(),
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
        metrics=expand(sample_file("metrics"), sample=SAMPLES),
        clinical=CLINICAL_SHEET,
    output:
        **{
            **COHORT_TABLES.as_dict(),
            "table1_html": report(COHORT_TABLES.table1_html, caption="../report/table1.rst", category="Cohort tables"),
        },
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
        pc_events=[stage_file("pc_events", s) for s in BM_SAMPLES],
        nk_events=[stage_file("nk_events", s) for s in SAMPLES],
        model=PC_MODEL if BM_SAMPLES else [],
        reference=resolve_path(config["clustering"]["reference"]),
    output:
        **COHORT_ANNDATA.as_dict(),
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
        **FigureInputs().as_dict(),
    output:
        # PNGs are registered for `snakemake --report`; SVGs are the publication copies.
        png=[
            report(png, caption=f"../report/{fig}.rst", category="Cohort figures")
            for fig, png in zip(COHORT_FIGURES, COHORT_PLOTS.png)
        ],
        svg=list(COHORT_PLOTS.svg),
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
        **ReportInputs(
            inventory=INVENTORY_TSV,
            samples=SAMPLE_SHEET,
            clinical=CLINICAL_SHEET,
            plots=[stage_file("plots", s) for s in SAMPLES],  # a reviewed sample's: its reviewed gates
            review_changes=CHANGES_TSV,
            review_problems=PROBLEMS_TSV,
        ).as_dict(),
    output:
        html=report(REPORT_HTML, caption="../report/report.rst", category="Report"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/cohort/report.log",
    script:
        "../scripts/report.py"
