"""Instrument calibration of the gating templates: a lab's own files locate each marker's negative
and positive populations (scatter: the main population), the template's windows are mapped from
where its ``expected:`` section says they sat to where the lab's instrument puts them, and a lab
gating folder is written (``<panel>.xml``, ``<panel>.yaml``, ``calibration.tsv``, one diagnostic
plot per marker) for the lab to review.

A lab tool, not a stage (``scripts/calibrate_instrument.py`` is its command line): it reads files
with :func:`mrdflow.gating.open_tube` and gates them with the shared template; nothing in the
analysis imports it. Importing this package is cheap; FlowKit and matplotlib load when used.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_modes": [
            "MarkerModes",
            "Population",
            "locate_main",
            "locate_modes",
            "populations",
        ],
        "_mapping": [
            "ExpectedMarker",
            "ExpectedPositions",
            "WindowMap",
            "map_for",
            "map_rules",
            "map_strategy",
            "read_expected",
            "rule_windows",
        ],
        "_calibrate": [
            "MAX_EVENTS",
            "MarkerCalibration",
            "PanelCalibration",
            "calibrate_markers",
            "calibrate_panel",
            "calibrate_pooled",
        ],
        "_write": [
            "TSV_COLUMNS",
            "calibration_rows",
            "plot_marker",
            "rules_text",
            "write_lab_gating",
        ],
    },
)
