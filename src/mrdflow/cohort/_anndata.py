"""Cohort events as AnnData (``.h5ad``) for scanpy users: the PC events used for clustering and the
NK events of every sample (rule ``cohort_anndata``; files :class:`mrdflow.cohort.AnnDataFiles`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mrdflow.cohort._outputs import AnnDataFiles

__all__ = ["write_anndata"]


def write_anndata(pc_files: Sequence[str | Path], nk_files: Sequence[str | Path], patient_of: Mapping[str, str],
                  model_path: str | Path | None, reference_path: str | Path | None,
                  out: AnnDataFiles) -> None:
    """AnnData (.h5ad) files for scanpy users: ``out.pc``, the PC events used for clustering (backbone
    markers as vars; obs sample_id, patient_id, tube, cluster, aberrant), and ``out.nk``, the NK events
    (NK panel markers; obs sample_id, patient_id, NK_bright, NK_dim, NKG2Apos). Values are logicle (gate
    units). ``patient_of``: sample ID -> patient ID; ``model_path``/``reference_path``: the cohort PC
    model and the normal-PC reference (None: clusters -1, no event aberrant)."""
    import anndata as ad
    import numpy as np

    from mrdflow.atomic import atomic_path
    from mrdflow.clustering import BACKBONE, PCModel, aberrant_events, load_pc_events, load_reference

    model = PCModel.load(model_path) if model_path else None
    reference = load_reference(reference_path) if reference_path else None
    xs, obs = [], []
    for f in pc_files:
        for e in load_pc_events(f):
            x = e.backbone()
            if x.shape[0] == 0:
                continue
            cl = model.predict(x) if model is not None else np.full(x.shape[0], -1)
            ab = aberrant_events(model, e, cl, reference) if model is not None and reference is not None \
                else np.zeros(x.shape[0], bool)
            xs.append(x)
            obs.append(pd.DataFrame({"sample_id": e.sample_id, "patient_id": patient_of.get(e.sample_id, ""),
                                     "tube": e.tube, "cluster": cl.astype(int), "aberrant": ab}))
    X = np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, len(BACKBONE)), np.float32)
    o = (pd.concat(obs, ignore_index=True) if obs
         else pd.DataFrame(columns=["sample_id", "patient_id", "tube", "cluster", "aberrant"]))
    _write_h5ad(ad.AnnData(X=X, obs=_obs_index(o), var=pd.DataFrame(index=list(BACKBONE))), out.pc, atomic_path)
    xs, obs = [], []
    loaded = [(f, z) for f in nk_files for z in [np.load(f, allow_pickle=False)] if z["values"].size]
    # The markers every NK tube has (NK tubes with counting beads carry one more channel, and a
    # lab's panels may differ): the AnnData's vars, in the first tube's order.
    lists = [z["markers"].tolist() for _, z in loaded]
    markers = [m for m in lists[0] if all(m in other for other in lists)] if lists else []
    for _, z in loaded:
        sid = str(z["sample_id"])
        cols = [z["markers"].tolist().index(m) for m in markers]
        xs.append(z["values"][:, cols])
        obs.append(pd.DataFrame({"sample_id": sid, "patient_id": patient_of.get(sid, ""),
                                 **{k: z[k].astype(bool) for k in ("NK_bright", "NK_dim", "NKG2Apos")}}))
    X = np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, len(markers)), np.float32)
    o = pd.concat(obs, ignore_index=True) if obs else pd.DataFrame(columns=["sample_id", "patient_id"])
    _write_h5ad(ad.AnnData(X=X, obs=_obs_index(o), var=pd.DataFrame(index=markers)), out.nk, atomic_path)


def _obs_index(obs: pd.DataFrame) -> pd.DataFrame:
    obs = obs.copy()
    obs.index = [f"e{i}" for i in range(len(obs))]
    for c in ("sample_id", "patient_id", "tube"):
        if c in obs:
            obs[c] = obs[c].astype("category")
    return obs


def _write_h5ad(adata, out, atomic_path) -> None:
    with atomic_path(out, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)
