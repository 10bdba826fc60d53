"""Cohort stage (rule file ``workflow/rules/cohort.smk``): per-sample metrics joined with the
clinical sheet into tables, CAR-T kinetics, statistics, AnnData, figures and the HTML report.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_tables": [
            "CohortTables",
            "add_derived",
            "build_patients",
            "dose_label",
            "load_metrics",
            "response_summary",
            "sample_metrics_rows",
            "table1",
            "write_table",
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
        ],
        "_report": [
            "FIGURES",
            "SECTIONS",
            "SOFTWARE",
            "build_report",
        ],
    },
)
