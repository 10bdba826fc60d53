"""Gating: the float32 gate engine, Gating-ML/FlowJo templates, compensation and transforms, QC
(time, singlets), density valleys and data-driven gate placement, in memory or streamed.

A library, not a stage: :mod:`mrdflow.sample` uses it. Importing this package is cheap; FlowKit is
loaded when a name that needs it is first used.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_engine": [
            "DEFAULT_CHUNK_SIZE",
            "Feature",
            "GateEngine",
            "GateEngineError",
            "GatePath",
            "GateResult",
            "flowkit_membership",
            "points_in_polygon",
        ],
        "_gating": [
            "GatingError",
            "GatingTemplate",
            "GateStep",
            "TubeGating",
            "TubeView",
            "KeptEvents",
            "StreamedGating",
            "gate_tube",
            "gate_tube_streamed",
            "load_template",
            "template_from_workspace",
        ],
        "_qc": [
            "QCSettings",
            "TimeQC",
            "SingletGate",
            "time_qc",
            "singlet_gate",
            "robust_z",
        ],
        "_density": [
            "Density",
            "density",
            "peaks",
            "valley_between",
            "threshold_valley",
        ],
        "_transforms": [
            "CompensationError",
            "Compensation",
            "apply_transform",
            "compensation_for",
            "fast_logicle",
            "make_transform",
            "parse_spillover",
            "transform_events",
        ],
    },
)
