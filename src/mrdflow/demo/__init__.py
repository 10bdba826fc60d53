"""Demo and test cohorts (rule file ``workflow/rules/demo.smk``): the FCS simulator with planted
truth, and the validation of the pipeline's read-outs against that truth. Nothing in the analysis
imports this package.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_simulate": [
            "SIM_VERSION",
            "SAMPLE_COLUMNS",
            "POPULATIONS",
            "NUCLEATED_EXCLUDE",
            "cart_concentration",
            "load_design",
            "make_samples",
            "simulate_file",
            "simulate_cohort",
            "spillover_matrix",
            "main",
        ],
        "_validate": [
            "Bars",
            "Check",
            "PosterNumbers",
            "format_report",
            "validate",
            "validate_cohort",
        ],
    },
)
