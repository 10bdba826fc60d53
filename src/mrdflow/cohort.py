"""Cohort stage: per-sample metrics joined with the clinical sheet into cohort tables.

Visits are matched through the sample sheet's ``visit``/``day``/``infusion`` (copied into every
``metrics.json``), never through file names: the baseline marrow gives PC burden, the baseline PB
NK tube gives NKG2A%, the week-4 marrow gives the MRD call, and the serial PB CAR-T tubes give the
kinetics per infusion (:mod:`mrdflow.kinetics`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from mrdflow.atomic import atomic_open
from mrdflow.sample import flatten_metrics

__all__ = ["CohortTables", "build_patients", "dose_label", "load_metrics", "sample_metrics_rows", "write_table"]

#: Columns that lead the sample table, in this order; the rest follow alphabetically.
LEADING = ["sample_id", "patient_id", "specimen", "visit", "day", "infusion", "status", "errors",
           "pc_pc_pct", "pc_aberrant_pc_pct", "mrd_mrd_status", "mrd_mrd_level", "mrd_sensitivity",
           "mrd_n_nucleated", "mrd_n_aberrant_pc", "mrd_hemodilution", "nk_nkg2a_pct", "cart_cells_per_ul"]


def sample_metrics_rows(files: Iterable[str | Path]) -> list[dict]:
    """One flat row per ``metrics.json`` (nested keys joined with '_')."""
    rows = []
    for f in files:
        with open(f) as fh:
            rows.append(flatten_metrics(json.load(fh)))
    return rows


def _cell(v) -> str:
    if v is None:
        return "NA"
    if isinstance(v, float):
        return "NA" if not math.isfinite(v) else f"{v:.6g}"
    return str(v).replace("\t", " ").replace("\n", " ")


def write_table(rows: Sequence[dict], path: str | Path, leading: Sequence[str] = LEADING) -> None:
    """Write rows as TSV (union of keys; leading columns first), atomically."""
    keys: list[str] = [k for k in leading if any(k in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(keys))
    cols = keys + rest
    with atomic_open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])


RESPONSES = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD")


def load_metrics(files: Iterable[str | Path]) -> list[dict]:
    """Every ``metrics.json`` as a dict."""
    out = []
    for f in files:
        with open(f) as fh:
            out.append(json.load(fh))
    return out


def dose_label(cells: float | None) -> str | None:
    """A dose in cells as the poster writes it: 3.0e8 -> '3.0×10^8'."""
    if cells is None or (isinstance(cells, float) and math.isnan(cells)):
        return None
    exp = int(math.floor(math.log10(cells)))
    return f"{cells / 10 ** exp:.1f}×10^{exp}"


@dataclass
class CohortTables:
    """patients: one row per patient (clinical + flow read-outs). kinetics: one row per CAR-T
    sample (patient, infusion, day, cells/µL). mrd: one row per marrow sample."""

    patients: pd.DataFrame
    kinetics: pd.DataFrame
    mrd: pd.DataFrame


def _get(m: Mapping, *keys, default=None):
    cur: Any = m
    for k in keys:
        if not isinstance(cur, Mapping) or k not in cur:
            return default
        cur = cur[k]
    return cur


def _pick(metrics: Sequence[dict], patient: str, specimen: str, visit: str, key: str) -> dict | None:
    """The patient's sample of that specimen and visit that carries ``key`` (the latest day wins
    if several)."""
    hits = [m for m in metrics if m["patient_id"] == patient and m["specimen"] == specimen
            and m["visit"] == visit and key in m]
    return sorted(hits, key=lambda m: (m.get("infusion", 1), m.get("day", 0)))[-1] if hits else None


def build_patients(clinical: Sequence[Mapping], metrics: Sequence[dict], *, cart_lloq: float = 1.0,
                   auc_window_days: float = 28.0) -> CohortTables:
    """Join the clinical sheet with every sample's read-outs (see the module docstring).

    ``cart_lloq``: CAR-T assay LLOQ in cells/µL (persistence = last day at or above it).
    """
    from mrdflow.kinetics import kinetics as pk

    kin_rows, mrd_rows, rows = [], [], []
    for m in metrics:
        if "cart" in m:
            c = m["cart"]
            kin_rows.append({
                "patient_id": m["patient_id"], "infusion": m["infusion"], "day": m["day"], "sample_id": m["sample_id"],
                "cells_per_ul": c.get("cells_per_ul"), "car_pct_cd3": c.get("car_pct_cd3"),
                "cells_per_ul_ci95_low": c.get("cells_per_ul_ci95_low"), "cells_per_ul_ci95_high": c.get("cells_per_ul_ci95_high"),
            })
        if "mrd" in m:
            mrd_rows.append({
                "patient_id": m["patient_id"], "sample_id": m["sample_id"], "visit": m["visit"], "day": m["day"],
                "infusion": m["infusion"], "mrd_status": _get(m, "mrd", "mrd_status"),
                "mrd_level": _get(m, "mrd", "mrd_level"), "sensitivity": _get(m, "mrd", "sensitivity"),
                "n_nucleated": _get(m, "mrd", "n_nucleated"), "n_aberrant_pc": _get(m, "mrd", "n_aberrant_pc"),
                "hemodilution": _get(m, "mrd", "hemodilution"), "reason": _get(m, "mrd", "mrd_reason"),
                "pc_pct": _get(m, "pc", "pc_pct"),
            })
    kin = pd.DataFrame(kin_rows, columns=["patient_id", "infusion", "day", "sample_id", "cells_per_ul", "car_pct_cd3",
                                          "cells_per_ul_ci95_low", "cells_per_ul_ci95_high"])
    kin = kin.sort_values(["patient_id", "infusion", "day"], kind="stable").reset_index(drop=True)
    mrd = pd.DataFrame(mrd_rows, columns=["patient_id", "sample_id", "visit", "day", "infusion", "mrd_status", "mrd_level",
                                          "sensitivity", "n_nucleated", "n_aberrant_pc", "hemodilution", "reason", "pc_pct"])
    for c in clinical:
        pid = c["patient_id"]
        row: dict[str, Any] = dict(c)
        row["dose_level"] = dose_label(c.get("cart_dose_cells"))
        bm0 = _pick(metrics, pid, "BM", "baseline", "pc")
        row["baseline_pc_pct"] = _get(bm0, "pc", "pc_pct") if bm0 else None
        row["baseline_aberrant_pc_pct"] = _get(bm0, "pc", "aberrant_pc_pct") if bm0 else None
        nk0 = _pick(metrics, pid, "PB", "baseline", "nk")
        for key, src in (("baseline_nkg2a_pct", "nkg2a_pct"), ("baseline_nkg2a_pct_bright", "nkg2a_pct_bright"),
                         ("baseline_nkg2a_pct_dim", "nkg2a_pct_dim"), ("baseline_nk_pct_lymph", "nk_pct_lymph"),
                         ("baseline_nk_bright_pct", "nk_bright_pct_of_nk"), ("baseline_nkg2a_median", "nkg2a_median"),
                         ("baseline_nkg2a_threshold_source", "nkg2a_threshold_source")):
            row[key] = _get(nk0, "nk", src) if nk0 else None
        w4 = _pick(metrics, pid, "BM", "week4", "mrd")
        row["w4_mrd_status"] = _get(w4, "mrd", "mrd_status") if w4 else None
        row["w4_mrd_level"] = _get(w4, "mrd", "mrd_level") if w4 else None
        row["w4_sensitivity"] = _get(w4, "mrd", "sensitivity") if w4 else None
        row["w4_mrd_reason"] = _get(w4, "mrd", "mrd_reason") if w4 else "no week-4 marrow analysed"
        for inf in sorted(set(kin.loc[kin.patient_id == pid, "infusion"])) or [1]:
            sub = kin[(kin.patient_id == pid) & (kin.infusion == inf)]
            k = pk(sub["day"].tolist(), sub["cells_per_ul"].tolist(), lloq=cart_lloq, window=auc_window_days)
            sfx = "" if inf == 1 else f"_i{inf}"
            peak = sub.loc[sub["cells_per_ul"].astype(float).idxmax()] if k.n_points and sub["cells_per_ul"].notna().any() else None
            row[f"cart_cmax{sfx}"] = k.cmax
            row[f"cart_tmax_day{sfx}"] = k.tmax_day
            row[f"cart_auc_0_28{sfx}"] = k.auc_0_28
            row[f"cart_auc_complete{sfx}"] = k.auc_complete
            row[f"cart_persistence_day{sfx}"] = k.persistence_day
            row[f"cart_car_pct_cd3_peak{sfx}"] = None if peak is None else peak["car_pct_cd3"]
            row[f"cart_n_samples{sfx}"] = k.n_points
        rows.append(row)
    patients = pd.DataFrame(rows)
    return CohortTables(patients, kin, mrd)


def write_anndata(pc_files: Sequence[str | Path], nk_files: Sequence[str | Path], patient_of: Mapping[str, str],
                  model_path: str | Path | None, reference_path: str | Path | None,
                  out_pc: str | Path, out_nk: str | Path) -> None:
    """AnnData (.h5ad) files for scanpy users: the PC events used for clustering (backbone markers as
    vars; obs sample_id, patient_id, tube, cluster, aberrant) and the NK events (NK panel markers;
    obs sample_id, patient_id, NK_bright, NK_dim, NKG2Apos). Values are logicle (gate units)."""
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
    o = pd.concat(obs, ignore_index=True) if obs else pd.DataFrame(columns=["sample_id", "patient_id", "tube", "cluster", "aberrant"])
    _write_h5ad(ad.AnnData(X=X, obs=_obs_index(o), var=pd.DataFrame(index=list(BACKBONE))), out_pc, atomic_path)
    xs, obs, markers = [], [], None
    for f in nk_files:
        z = np.load(f, allow_pickle=False)
        if z["values"].size == 0:
            continue
        markers = markers or z["markers"].tolist()
        if z["markers"].tolist() != markers:
            raise ValueError(f"{f}: NK markers {z['markers'].tolist()} differ from {markers}")
        sid = str(z["sample_id"])
        xs.append(z["values"])
        obs.append(pd.DataFrame({"sample_id": sid, "patient_id": patient_of.get(sid, ""),
                                 **{k: z[k].astype(bool) for k in ("NK_bright", "NK_dim", "NKG2Apos")}}))
    markers = markers or []
    X = np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, len(markers)), np.float32)
    o = pd.concat(obs, ignore_index=True) if obs else pd.DataFrame(columns=["sample_id", "patient_id"])
    _write_h5ad(ad.AnnData(X=X, obs=_obs_index(o), var=pd.DataFrame(index=markers)), out_nk, atomic_path)


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


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """A Parquet copy of a table (pyarrow), written atomically."""
    from mrdflow.atomic import atomic_path

    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
