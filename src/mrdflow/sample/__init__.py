"""Per-sample stage (rule file ``workflow/rules/sample.smk``): gate every tube of one specimen draw
(:func:`analyse_sample`), then with the cohort PC model make the MRD call and write ``metrics.json``
(:func:`finish_sample`). Read-outs: plasma cells and MRD, NK/NKG2A, CAR-T counts, gating plots.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_analysis": [
            "SampleSettings",
            "analyse_sample",
            "finish_sample",
            "readout_values",
            "settings_from_config",
        ],
        "_mrd": [
            "MRDSettings",
            "TubeCount",
            "MRDResult",
            "HemodilutionSettings",
            "HemodilutionResult",
            "hemodilution",
            "mrd_call",
        ],
        "_nk": [
            "NKMetrics",
            "NKError",
            "NK_GATES",
            "FMO_MARKER",
            "nk_metrics",
            "gate_nk_sample",
        ],
        "_cart": [
            "AbsoluteCount",
            "absolute_count",
            "CARTError",
            "CARTMetrics",
            "CART_GATES",
            "cart_metrics",
            "gate_cart_tube",
        ],
        "_plots": [
            "plot_gating",
        ],
        "_outputs": [
            "SAMPLE_DIR",
            "SampleFiles",
            "SAMPLE_FILES",
            "sample_file",
            "reviewed_file",
            "REVIEWED_DIR",
            "plot_file_name",
        ],
    },
)
