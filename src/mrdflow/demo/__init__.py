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
            "nk_days",
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
            "cart_kinetics",
            "nk_planted",
            "patient_truths",
            "relation_factors",
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
            "validate_timelines",
        ],
    },
)
