"""Cohort stage (rule file ``workflow/rules/cohort.smk``): per-sample metrics joined with the
clinical sheet into tables, CAR-T kinetics, statistics, AnnData, figures and the HTML report.

The stage's files are named once, in ``_outputs`` (light: the Snakefile imports it while it is
parsed): each rule's named inputs or outputs are a small dataclass (:class:`CohortTableFiles`,
:class:`ReportInputs`, ...) whose fields are the rule's names and whose defaults are the paths.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_outputs": [
            "RESULTS_DIR",
            "COHORT_DIR",
            "PLOTS_DIR",
            "REPORT_HTML",
            "COHORT_FIGURES",
            "figure_paths",
            "SampleMetricsTable",
            "CohortTableFiles",
            "AnnDataFiles",
            "FigureInputs",
            "FigureFiles",
            "ReportInputs",
        ],
        "_tables": [
            "CohortTables",
            "add_derived",
            "build_patients",
            "load_metrics",
            "read_tsv",
            "response_summary",
            "sample_metrics_rows",
            "table1",
            "write_cohort",
            "write_table",
            "write_tsv",
        ],
        "_anndata": [
            "write_anndata",
        ],
        "_kinetics": [
            "Kinetics",
            "kinetics",
        ],
        "_stats": [
            "Association",
            "spearman",
            "mann_whitney",
            "fisher",
            "associations",
            "TESTS",
        ],
        "_figures": [
            "RESPONSE_COLORS",
            "DOSE_COLORS",
            "dose_color",
            "swimmer_plot",
            "kinetics_plot",
            "nkg2a_auc_plot",
            "mrd_plot",
            "write_cohort_figures",
        ],
        "_fig_over_time": [
            "over_time_plot",
        ],
        "_report": [
            "FIGURES",
            "SECTIONS",
            "SOFTWARE",
            "build_report",
        ],
    },
)
