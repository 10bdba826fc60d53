"""Cohort PC model (rule file ``workflow/rules/clustering.smk``): PC events of every marrow pooled,
k-means on dask, clusters labelled against the normal-PC reference; the per-sample stage maps its
PC events onto the model.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_model": [
            "BACKBONE",
            "ClusterLabel",
            "ClusteringSettings",
            "NormalPCReference",
            "PCModel",
            "PCEvents",
            "dask_client",
            "fit_pc_model",
            "label_clusters",
            "load_pc_events",
            "load_reference",
            "map_events",
            "aberrant_events",
            "save_pc_events",
        ],
    },
)
