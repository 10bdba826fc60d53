"""Cohort PC model (rule file ``workflow/rules/clustering.smk``): PC events of every marrow pooled,
k-means on dask, clusters labelled against the normal-PC reference; the per-sample stage maps its
PC events onto the model. A lab builds its normal-PC reference from normal marrows with
:func:`build_normal_pc_reference` (``scripts/build_normal_pc_reference.py``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_events": [
            "BACKBONE",
            "ClusteringError",
            "PCEvents",
            "load_pc_events",
            "save_pc_events",
        ],
        "_reference": [
            "MIN_REFERENCE_EVENTS",
            "REFERENCE_MARKERS",
            "NormalPCReference",
            "build_normal_pc_reference",
            "load_reference",
            "write_reference",
        ],
        "_model": [
            "PC_MODEL_JSON",
            "ClusterLabel",
            "ClusteringSettings",
            "PCModel",
            "dask_client",
            "fit_pc_model",
            "label_clusters",
            "map_events",
            "aberrant_events",
        ],
    },
)
