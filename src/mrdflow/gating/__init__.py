"""Gating: the float32 gate engine, Gating-ML/FlowJo templates, compensation and transforms, QC
(time, singlets), density valleys and data-driven gate placement, in memory or streamed.

A tube is opened with :func:`open_tube` (header, panel, compensation) and gated with
:func:`gate_tube` (:meth:`OpenTube.view` reads its events) or :func:`gate_tube_streamed`. Gates are
placed by the methods of two tables: :data:`GATE_PLACERS` (gate-level methods such as the time QC,
and the template gate kinds) and :data:`BOUND_METHODS` (a rectangle bound: valley, tail, gmm, fmo,
fixed, populations, above_negative, brightest); a template's ``method:`` names an entry. A panel
marker read on other markers' channels (``shares:``, e.g. counting beads) is the per-event minimum
of theirs, written in Gating-ML on those channels. Every placed bound
records its :class:`BoundEvidence`; an uncertain gate names why in ``GateStep.review``
(``TubeGating.reviews()``).

A library, not a stage: :mod:`mrdflow.sample` uses it. Importing this package is cheap; FlowKit is
loaded when a name that needs it is first used.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_model": [
            "Strategy",
        ],
        "_gatingml": [
            "gatingml_bytes",
        ],
        "_engine": [
            "DEFAULT_CHUNK_SIZE",
            "GateEngine",
            "GateResult",
        ],
        "_compile": [
            "Feature",
            "GateEngineError",
            "GatePath",
            "combine_boolean",
            "points_in_polygon",
        ],
        "_rules": [
            "GatingError",
            "BoundRule",
            "GateRule",
        ],
        "_template": [
            "GatingTemplate",
            "compile_template",
            "load_compiled_template",
            "load_template",
            "rules_document",
            "rules_files",
            "template_from_workspace",
        ],
        "_workspace": [
            "WorkspaceSample",
            "WorkspaceSampleMissing",
            "match_workspace_sample",
            "workspace_samples",
        ],
        "_flowjo_out": [
            "FlowJoSample",
            "write_workspace",
        ],
        "_view": [
            "OpenTube",
            "TubeView",
            "open_tube",
        ],
        "_result": [
            "GateStep",
            "TubeGating",
            "KeptEvents",
            "StreamedGating",
        ],
        "_bounds": [
            "BOUND_METHODS",
            "BoundContext",
            "BoundMethod",
            "PlacedBound",
        ],
        "_evidence": [
            "BoundEvidence",
        ],
        "_placement": [
            "GATE_PLACERS",
            "Placement",
            "TemplateGate",
        ],
        "_tube": [
            "gate_tube",
        ],
        "_streaming": [
            "gate_tube_streamed",
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
