"""Demo and test cohorts (rule file ``workflow/rules/demo.smk``): the FCS simulator with planted
truth, and the validation of the pipeline's read-outs against that truth. Nothing in the analysis
imports this package.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_design": [
            "SAMPLE_COLUMNS",
            "load_design",
            "make_samples",
        ],
        "_populations": [
            "POPULATIONS",
            "NUCLEATED_EXCLUDE",
        ],
        "_instrument": [
            "INSTRUMENTS",
            "Instrument",
            "instrument_for",
            "marker_shifts",
            "spillover_matrix",
        ],
        "_biology": [
            "BIOLOGIES",
            "effective_patient",
        ],
        "_planted": [
            "cart_concentration",
        ],
        "_simulate": [
            "SIM_VERSION",
            "simulate_file",
            "simulate_cohort",
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
