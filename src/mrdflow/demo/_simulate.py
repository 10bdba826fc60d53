"""Cohort simulator: BD-style (FACSCanto/FACSLyric-like) FCS tubes with planted, saved truths.

Every tube listed in a sample sheet is generated from a design file (planted truths per patient)
and written as FCS 3.1 with, beside it, ``<name>.labels.npz`` (per-event uint8 population labels,
the population names and a clog mask) and ``<name>.truth.json`` (counts and planted read-outs).
A cohort-level ``truth.tsv`` collects one row per file. Truth is for validation only; the analysis
never reads it.

Signal model (per event): scatter (FSC-A, FSC-H, SSC-A) and per-marker specific fluorescence are
log-normal per population (a population may be a mixture, e.g. CD27+ and CD27- memory/naive B
cells), plus per-detector autofluorescence; the true fluorescence is spilled into neighbouring
detectors with the file's ``$SPILLOVER`` matrix (observed = true @ S), then electronic + photon
noise is added and a per-detector baseline subtracted, so unstained cells sit around 0 with
negative values, and values saturate at ``$PnR``-1. Doublets are sums of two cells (FSC-A adds,
FSC-H grows less), dead cells are shrunken, dimmed, viability-dye-bright cells, debris is low-FSC
rubbish. An optional clog segment lowers the event rate and drifts the signals. Counting beads are
bright in all channels, brightest in APC.

Randomness: a numpy Generator per file, seeded from (cohort seed, sample id, tube); events are
generated in chunks (``CHUNK`` events) from spawned child seeds, so a file is reproducible alone
and memory stays bounded by the chunk size (plus the uint8 labels and float64 times).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import sys
import time as _time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrdflow.io import format_spillover, write_fcs

__all__ = [
    "SIM_VERSION",
    "SAMPLE_COLUMNS",
    "POPULATIONS",
    "NUCLEATED_EXCLUDE",
    "cart_concentration",
    "load_design",
    "make_samples",
    "simulate_file",
    "simulate_cohort",
    "spillover_matrix",
    "main",
]

SIM_VERSION = "1.0"
CHUNK = 500_000
PNR = 262144
SAT = PNR - 1
TIMESTEP = 0.01  # seconds per Time channel unit (BD FACSDiva default)

SAMPLE_COLUMNS = [
    "sample_id", "patient_id", "specimen", "visit", "day", "infusion", "tube", "panel", "role",
    "fmo_marker", "fcs", "beads_per_tube", "blood_volume_ul",
]  # fmo_marker (the marker an FMO tube leaves unstained) as in workflow/schemas/samples.schema.yaml
TUBE_PANEL = {"ngf1": "ngf_tube1", "ngf2": "ngf_tube2", "nk": "pb_nk", "nk_fmo": "pb_nk",
              "cart": "pb_cart"}

_REPO = Path(__file__).resolve().parents[3]
PANELS_DIR = _REPO / "resources" / "panels"

# --------------------------------------------------------------------------------------------
# Populations (label ids are the index in these tuples)
# --------------------------------------------------------------------------------------------
POPULATIONS: dict[str, tuple[str, ...]] = {
    "bm": (
        "debris", "doublet", "neutrophil", "eosinophil", "monocyte", "t_cell", "nk_cell",
        "b_mature_kappa", "b_mature_lambda", "b_precursor", "myeloid_precursor", "mast_cell",
        "erythroblast", "pc_normal_kappa", "pc_normal_lambda", "pc_aberrant",
    ),
    "nk": (
        "debris", "doublet", "dead", "granulocyte", "monocyte", "b_cell", "t_nkg2a_neg",
        "t_nkg2a_pos", "nk_bright_nkg2a_pos", "nk_bright_nkg2a_neg", "nk_dim_nkg2a_pos",
        "nk_dim_nkg2a_neg",
    ),
    "cart": (
        "debris", "doublet", "dead", "bead", "granulocyte", "monocyte", "b_cell", "nk_cell",
        "t_cd4", "t_cd8", "cart_cd4", "cart_cd8",
    ),
}
# Nucleated cells = every label except these (stated in each truth.json).
NUCLEATED_EXCLUDE = ("debris", "doublet", "dead", "bead")
NUCLEATED_DEFINITION = (
    "all single viable cell events: every population except debris, doublet, dead and bead "
    "(BM: includes CD45- erythroblasts and plasma cells; BM tubes have no dead-cell population)"
)
_KIND = {"ngf_tube1": "bm", "ngf_tube2": "bm", "pb_nk": "nk", "pb_cart": "cart"}

# --------------------------------------------------------------------------------------------
# Instrument: autofluorescence, baseline, spillover (by fluorochrome)
# --------------------------------------------------------------------------------------------
_AF = {"BV421": 70, "BV510": 90, "FITC": 160, "PE": 130, "PerCP-Cy5.5": 110, "PE-Cy7": 70,
       "APC": 45, "APC-C750": 45, "APC-H7": 45}
_SIGMA_E = 45.0  # electronic noise (linear units)
_PHOTON = 1.0  # photon noise variance per unit signal
# (source fluorochrome, receiving fluorochrome's detector) -> fraction
_SPILL = {
    ("BV421", "BV510"): 0.16, ("BV421", "FITC"): 0.010,
    ("BV510", "BV421"): 0.012, ("BV510", "FITC"): 0.090, ("BV510", "PE"): 0.030,
    ("BV510", "PerCP-Cy5.5"): 0.010,
    ("FITC", "BV510"): 0.012, ("FITC", "PE"): 0.22, ("FITC", "PerCP-Cy5.5"): 0.040,
    ("FITC", "PE-Cy7"): 0.006,
    ("PE", "FITC"): 0.012, ("PE", "PerCP-Cy5.5"): 0.14, ("PE", "PE-Cy7"): 0.035,
    ("PE", "APC"): 0.002,
    ("PerCP-Cy5.5", "PE"): 0.005, ("PerCP-Cy5.5", "PE-Cy7"): 0.11, ("PerCP-Cy5.5", "APC"): 0.015,
    ("PerCP-Cy5.5", "APC-C750"): 0.030, ("PerCP-Cy5.5", "APC-H7"): 0.028,
    ("PE-Cy7", "PE"): 0.015, ("PE-Cy7", "PerCP-Cy5.5"): 0.020, ("PE-Cy7", "APC"): 0.002,
    ("PE-Cy7", "APC-C750"): 0.070, ("PE-Cy7", "APC-H7"): 0.065,
    ("APC", "PerCP-Cy5.5"): 0.012, ("APC", "PE-Cy7"): 0.005, ("APC", "APC-C750"): 0.13,
    ("APC", "APC-H7"): 0.11,
    ("APC-C750", "APC"): 0.050, ("APC-C750", "PE-Cy7"): 0.030,
    ("APC-H7", "APC"): 0.045, ("APC-H7", "PE-Cy7"): 0.027,
}
_VOLTAGES = {"FSC": 420, "SSC": 480, "BV421": 420, "BV510": 450, "FITC": 500, "PE": 460,
             "PerCP-Cy5.5": 560, "PE-Cy7": 580, "APC": 600, "APC-C750": 620, "APC-H7": 620}


def spillover_matrix(fluorochromes: Sequence[str]) -> np.ndarray:
    """Spillover matrix for the given fluorochromes (rows source, columns detector, diag 1)."""
    n = len(fluorochromes)
    m = np.eye(n)
    for i, a in enumerate(fluorochromes):
        for j, b in enumerate(fluorochromes):
            if i != j:
                m[i, j] = _SPILL.get((a, b), 0.0)
    return m


# --------------------------------------------------------------------------------------------
# Phenotypes. Marker spec: (median, sd_log10) or a list of mixture components
# (weight, median|None, sd_log10); weights short of 1 leave the rest unstained.
# Scatter: (median, cv) log-normal. "af": autofluorescence factor vs a lymphocyte.
# --------------------------------------------------------------------------------------------
def _p(fsc, ssc, af=1.0, **markers):
    return {"fsc": fsc, "ssc": ssc, "af": af, "markers": markers}


_DEBRIS = _p((9000, 0.7), (5000, 0.9), 0.9, CD45=[(0.3, 800, 0.5)])

_BM = {
    "debris": _DEBRIS,
    "neutrophil": _p((95000, 0.12), (125000, 0.22), 2.5, CD45=(4000, 0.15), CD38=(350, 0.3),
                     CD81=(300, 0.3), CD27=[(0.05, 300, 0.3)]),
    "eosinophil": _p((95000, 0.10), (165000, 0.12), 6.0, CD45=(7000, 0.15), CD38=(500, 0.3)),
    "monocyte": _p((85000, 0.12), (55000, 0.2), 2.0, CD45=(12000, 0.15), CD38=(2500, 0.25),
                   CD81=(1500, 0.25), CD56=[(0.05, 2000, 0.3)]),
    "t_cell": _p((52000, 0.10), (14000, 0.2), 1.0, CD45=(20000, 0.12),
                 CD27=[(0.75, 3000, 0.2)], CD38=(400, 0.35), CD81=(2000, 0.25),
                 CD56=[(0.08, 3000, 0.3)]),
    "nk_cell": _p((55000, 0.10), (17000, 0.2), 1.0, CD45=(18000, 0.12), CD56=(4000, 0.3),
                  CD38=(3500, 0.2), CD81=(1500, 0.25), CD27=[(0.2, 1500, 0.3)]),
    "b_mature_kappa": _p((50000, 0.10), (13000, 0.2), 1.0, CD45=(15000, 0.12),
                         CD19=(6000, 0.18), CD27=[(0.3, 2500, 0.25)], CD38=(800, 0.3),
                         CD81=(4000, 0.2), IgK=(2500, 0.3)),
    "b_precursor": _p((45000, 0.10), (11000, 0.2), 1.0, CD45=(2500, 0.25), CD19=(4000, 0.2),
                      CD38=(12000, 0.2), CD81=(12000, 0.2)),
    "myeloid_precursor": _p((70000, 0.12), (30000, 0.3), 1.5, CD45=(3000, 0.2),
                            CD117=(4000, 0.25), CD38=(8000, 0.2), CD81=(2000, 0.3)),
    "mast_cell": _p((80000, 0.12), (70000, 0.3), 2.0, CD45=(9000, 0.15), CD117=(60000, 0.15),
                    CD81=(3000, 0.3)),
    "erythroblast": _p((40000, 0.15), (8000, 0.25), 0.8, CD38=(600, 0.3), CD81=(700, 0.3)),
    "pc_normal_kappa": _p((90000, 0.15), (32000, 0.3), 2.0, CD38=(90000, 0.15),
                          CD138=(15000, 0.25), CD19=[(0.85, 2500, 0.25)],
                          CD45=[(0.6, 6000, 0.3), (0.4, 800, 0.4)], CD56=[(0.1, 3000, 0.3)],
                          CD27=(6000, 0.25), CD81=(5000, 0.25), IgK=(40000, 0.2)),
    "pc_aberrant": _p((100000, 0.18), (38000, 0.3), 2.0, CD38=(50000, 0.2),
                      CD138=(25000, 0.25)),
}
_BM["b_mature_lambda"] = {**_BM["b_mature_kappa"],
                          "markers": {**{k: v for k, v in _BM["b_mature_kappa"]["markers"].items()
                                         if k != "IgK"}, "IgL": (2500, 0.3)}}
_BM["pc_normal_lambda"] = {**_BM["pc_normal_kappa"],
                           "markers": {**{k: v for k, v in _BM["pc_normal_kappa"]["markers"].items()
                                          if k != "IgK"}, "IgL": (40000, 0.2)}}

ABERRANT_LEVELS = {
    "CD56": {"neg": None, "dim": (1500, 0.3), "pos": (15000, 0.3)},
    "CD117": {"neg": None, "dim": (1200, 0.3), "pos": (6000, 0.25)},
    "CD45": {"neg": None, "dim": (700, 0.35), "pos": (5000, 0.3)},
    "CD27": {"neg": None, "dim": (600, 0.3), "pos": (4000, 0.25)},
    "CD81": {"neg": None, "dim": (600, 0.3), "pos": (4000, 0.25)},
    "CD19": {"neg": None, "dim": (600, 0.3), "pos": (2500, 0.25)},
}
DEFAULT_ABERRANT = {"CD56": "pos", "CD117": "neg", "CD45": "dim", "CD27": "dim", "CD81": "dim",
                    "CD19": "neg"}

_LYMPH_SC = ((52000, 0.10), (14000, 0.2))
_PB_COMMON = {
    "debris": _DEBRIS,
    "granulocyte": _p((100000, 0.10), (120000, 0.2), 2.5, CD45=(5000, 0.15)),
    "monocyte": _p((85000, 0.12), (50000, 0.2), 2.0, CD45=(12000, 0.12)),
    "b_cell": _p(*_LYMPH_SC, 1.0, CD45=(15000, 0.12)),
}
_NK = {
    **_PB_COMMON,
    "granulocyte": {**_PB_COMMON["granulocyte"], "markers": {
        "CD45": (5000, 0.15), "CD16": (40000, 0.2), "Dump": (800, 0.3)}},
    "monocyte": {**_PB_COMMON["monocyte"], "markers": {
        "CD45": (12000, 0.12), "Dump": (20000, 0.2), "CD16": [(0.1, 5000, 0.3)],
        "CD56": [(0.05, 2000, 0.3)]}},
    "b_cell": _p(*_LYMPH_SC, 1.0, CD45=(15000, 0.12), Dump=(8000, 0.2)),
    "t_nkg2a_neg": _p(*_LYMPH_SC, 1.0, CD45=(20000, 0.12), CD3=(15000, 0.15),
                      CD56=[(0.06, 3000, 0.3)], CD16=[(0.03, 3000, 0.3)]),
    "t_nkg2a_pos": _p(*_LYMPH_SC, 1.0, CD45=(20000, 0.12), CD3=(15000, 0.15),
                      CD56=[(0.4, 3000, 0.3)], CD16=[(0.1, 3000, 0.3)], CD159a=(5000, 0.3)),
    "nk_bright_nkg2a_pos": _p((56000, 0.10), (16000, 0.2), 1.0, CD45=(18000, 0.12),
                              CD56=(30000, 0.15), CD16=[(0.4, 1500, 0.35)],
                              CD159a=(10000, 0.25)),
    "nk_dim_nkg2a_pos": _p((55000, 0.10), (18000, 0.2), 1.0, CD45=(18000, 0.12),
                           CD56=(3500, 0.25), CD16=(25000, 0.2), CD159a=(6000, 0.3)),
}
for _n in ("bright", "dim"):
    _src = _NK[f"nk_{_n}_nkg2a_pos"]
    _NK[f"nk_{_n}_nkg2a_neg"] = {**_src, "markers": {k: v for k, v in _src["markers"].items()
                                                      if k != "CD159a"}}

_CART = {
    **_PB_COMMON,
    "monocyte": {**_PB_COMMON["monocyte"], "markers": {"CD45": (12000, 0.12),
                                                       "CD4": (1500, 0.25)}},
    "nk_cell": _p((55000, 0.10), (17000, 0.2), 1.0, CD45=(18000, 0.12),
                  CD8=[(0.3, 3000, 0.3)]),
    "t_cd4": _p(*_LYMPH_SC, 1.0, CD45=(20000, 0.12), CD3=(15000, 0.15), CD4=(8000, 0.15)),
    "t_cd8": _p(*_LYMPH_SC, 1.0, CD45=(20000, 0.12), CD3=(15000, 0.15), CD8=(20000, 0.18),
                CD4=[(0.03, 6000, 0.2)]),
    "cart_cd4": _p((60000, 0.12), (16000, 0.2), 1.2, CD45=(20000, 0.12), CD3=(11000, 0.2),
                   CD4=(8000, 0.15), CAR=(4000, 0.4)),
    "cart_cd8": _p((60000, 0.12), (16000, 0.2), 1.2, CD45=(20000, 0.12), CD3=(11000, 0.2),
                   CD8=(18000, 0.2), CAR=(4000, 0.4)),
    "bead": _p((30000, 0.04), (45000, 0.05), 0.0, Beads=(150000, 0.03), CAR=(15000, 0.04),
               CD3=(8000, 0.04), CD45=(3000, 0.05), Viability=(4000, 0.05), CD4=(6000, 0.04),
               CD8=(20000, 0.04)),
}
PHENOTYPES = {"bm": _BM, "nk": _NK, "cart": _CART}

# --------------------------------------------------------------------------------------------
# Design, panels, sample sheet
# --------------------------------------------------------------------------------------------


def load_design(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        d = yaml.safe_load(fh)
    if not isinstance(d, dict) or "patients" not in d:
        raise ValueError(f"{path}: a design needs a 'patients' mapping")
    return d


@dataclass
class _Panel:
    name: str
    markers: list[str]  # panel marker order = fluorescence parameter order
    fluors: list[str]
    detectors: list[str]


def _load_panel(name: str, panels_dir: Path = PANELS_DIR) -> _Panel:
    with open(panels_dir / f"{name}.yaml") as fh:
        y = yaml.safe_load(fh)
    mk = list(y["markers"])
    return _Panel(name, mk, [y["markers"][m]["fluorochrome"] for m in mk],
                  [y["markers"][m]["detector"] for m in mk])


def _fmt_day(day: int) -> str:
    return f"D{day:03d}" if day >= 0 else f"Dm{-day:02d}"


def serial_days(follow_up_days: int, schedule: Mapping, window_end: int | None = None) -> list[int]:
    days = [d for d in schedule.get("serial_days", [0, 4, 7, 10, 14, 21, 28])]
    step = int(schedule.get("monthly_every", 30))
    end = follow_up_days if window_end is None else min(follow_up_days, window_end)
    d = step * 2
    while d <= end:
        days.append(d)
        d += step
    return [x for x in days if x <= end]


def make_samples(design: Mapping) -> list[dict]:
    """The sample sheet rows (one per tube) implied by a design."""
    sch = design.get("schedule", {})
    cart_cfg = design.get("cart_tube", {})
    rows = []

    def add(sample_id, pid, specimen, visit, day, infusion, tube, role="stain", cart=False):
        if tube in ("nk", "cart"):
            stem = sample_id
        elif tube == "nk_fmo":
            stem = f"{sample_id}_fmo"
        else:
            stem = f"{sample_id}_{tube}"
        rows.append({
            "sample_id": sample_id, "patient_id": pid, "specimen": specimen, "visit": visit,
            "day": day, "infusion": infusion, "tube": tube, "panel": TUBE_PANEL[tube],
            "role": role, "fmo_marker": "CD159a" if role == "fmo" else "",
            "fcs": f"{pid}/{stem}.fcs",
            "beads_per_tube": cart_cfg.get("beads_per_tube", 50000) if cart else "",
            "blood_volume_ul": cart_cfg.get("blood_volume_ul", 50) if cart else "",
        })

    for pid, p in design["patients"].items():
        bday = int(p.get("baseline_day", sch.get("baseline_day", -5)))
        sid = f"{pid}_BM_baseline"
        add(sid, pid, "BM", "baseline", bday, 1, "ngf1")
        add(sid, pid, "BM", "baseline", bday, 1, "ngf2")
        sid = f"{pid}_PB_baseline_nk"
        add(sid, pid, "PB", "baseline", bday, 1, "nk")
        if p.get("nk", {}).get("fmo", False):
            add(sid, pid, "PB", "baseline", bday, 1, "nk_fmo", role="fmo")
        if "bm_week4" in p:
            wday = int(p["bm_week4"].get("day", sch.get("week4_day", 28)))
            sid = f"{pid}_BM_week4"
            add(sid, pid, "BM", "week4", wday, 1, "ngf1")
            add(sid, pid, "BM", "week4", wday, 1, "ngf2")
        fu = int(p["follow_up_days"])
        infs = p.get("infusions", [])
        for k, inf in enumerate(infs):
            start = int(inf.get("day", 0))
            nxt = int(infs[k + 1].get("day")) if k + 1 < len(infs) else None
            window = (nxt - start - 1) if nxt is not None else None
            days = inf.get("serial_days") or serial_days(fu - start, sch, window)
            for d in days:
                sid = f"{pid}_PB_I{k + 1}_{_fmt_day(int(d))}"
                add(sid, pid, "PB", "serial" if d <= 28 else "followup", int(d), k + 1, "cart",
                    cart=True)
    return rows


def write_samples_tsv(rows: Sequence[Mapping], path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, SAMPLE_COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in SAMPLE_COLUMNS})


def read_samples_tsv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# --------------------------------------------------------------------------------------------
# Planted quantities
# --------------------------------------------------------------------------------------------


def cart_concentration(day: float, p: Mapping) -> float:
    """Planted CAR-T cells/uL at ``day`` after an infusion: a smooth rise to ``cmax`` at ``tmax``
    ((t/tmax)^alpha * exp(alpha*(1-t/tmax))), then a two-phase contraction (fast, and a small
    slowly decaying persistence share ``slow_frac``)."""
    t = float(day)
    if t <= 0:
        return 0.0
    cmax, tmax = float(p["cmax"]), float(p["tmax"])
    if t <= tmax:
        a = float(p.get("alpha", 3.0))
        return cmax * (t / tmax) ** a * math.exp(a * (1 - t / tmax))
    s = float(p.get("slow_frac", 0.03))
    return cmax * ((1 - s) * math.exp(-float(p.get("k_fast", 0.15)) * (t - tmax))
                   + s * math.exp(-float(p.get("k_slow", 0.02)) * (t - tmax)))


def _host_blood(day: float, base: Mapping) -> dict[str, float]:
    """Host leukocytes per uL after lymphodepletion (day relative to the first infusion)."""
    d = float(day)
    lymph = 1.0 if d < -5 else 0.06 + 0.94 * (1 - math.exp(-max(0.0, d - 5) / 45))
    myel = 1.0 - 0.85 * math.exp(-(((d - 10) / 8) ** 2))
    return {
        "t": base.get("t", 900) * lymph, "nk": base.get("nk", 150) * (0.1 + 0.9 * (1 - math.exp(-max(0.0, d) / 20))),
        "b": base.get("b", 60) * lymph * 0.5, "mono": base.get("mono", 400) * myel,
        "gran": base.get("gran", 3000) * myel,
    }


def _largest_remainder(weights: Mapping[str, float], total: int) -> dict[str, int]:
    names = list(weights)
    w = np.array([max(0.0, float(weights[n])) for n in names])
    if w.sum() <= 0:
        return {n: 0 for n in names}
    exact = w / w.sum() * total
    base = np.floor(exact).astype(np.int64)
    rem = total - int(base.sum())
    if rem > 0:
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:rem]] += 1
    return {n: int(c) for n, c in zip(names, base)}


def _bm_counts(p: Mapping, visit: str, n_total: int, tube: str) -> tuple[dict[str, int], dict]:
    """Exact population counts for one NGF tube, and the planted values."""
    bm = p.get("bm_baseline" if visit == "baseline" else "bm_week4", {})
    debris = float(bm.get("debris_frac", 0.06 if visit == "baseline" else 0.04))
    doublet = float(bm.get("doublet_frac", 0.03 if visit == "baseline" else 0.025))
    n_cells_total = n_total - round(n_total * debris) - round(n_total * doublet)
    normal = {"neutrophil": 55, "eosinophil": 3, "monocyte": 6, "t_cell": 10, "nk_cell": 2,
              "b_mature": 3, "b_precursor": 1.5, "myeloid_precursor": 1.5, "mast_cell": 0.05,
              "erythroblast": 9}
    h = float(bm.get("hemodilution", 0.0))
    if h:
        for k in ("b_precursor", "myeloid_precursor", "mast_cell", "erythroblast"):
            normal[k] *= 1 - h
        for k in ("t_cell", "nk_cell", "b_mature", "monocyte"):
            normal[k] *= 1 + 2 * h
    kappa_share = float(p.get("normal_kappa_share", 0.63))
    planted: dict[str, Any] = {}
    if visit == "baseline":
        pc = float(bm["pc_pct"]) / 100
        ab = float(bm.get("aberrant_share", 0.95))
        n_pc = round(pc * n_cells_total)
        n_ab = round(ab * n_pc)
        n_norm_pc = n_pc - n_ab
        planted.update(pc_pct_of_nucleated=float(bm["pc_pct"]), aberrant_share_of_pc=ab)
    else:
        lvl = float(bm.get("aberrant_level", 0.0))
        n_ab = round(lvl * n_cells_total)
        n_norm_pc = round(float(bm.get("normal_pc_level", 2e-4)) * n_cells_total)
        planted.update(aberrant_level_of_nucleated=lvl,
                       normal_pc_level_of_nucleated=float(bm.get("normal_pc_level", 2e-4)),
                       week4_mrd_positive=bool(bm.get("mrd_positive", lvl * 2.2e6 >= 20)))
    n_other = n_cells_total - n_ab - n_norm_pc
    other = _largest_remainder(normal, n_other)
    bk = round(other.pop("b_mature") * 0.6)
    counts = {"debris": round(n_total * debris), "doublet": round(n_total * doublet), **other}
    b_total = n_other - sum(other.values())
    counts["b_mature_kappa"] = bk
    counts["b_mature_lambda"] = b_total - bk
    nk_pc = round(n_norm_pc * kappa_share)
    counts["pc_normal_kappa"] = nk_pc
    counts["pc_normal_lambda"] = n_norm_pc - nk_pc
    counts["pc_aberrant"] = n_ab
    planted["normal_pc_kappa_share"] = kappa_share
    return counts, planted


def _nk_split(nkg2a: float, bright_frac: float, bright_pos: float | None) -> tuple[float, float]:
    if bright_pos is None:
        bright_pos = min(0.85, 0.5 * nkg2a / bright_frac)
    dim_pos = (nkg2a - bright_frac * bright_pos) / (1 - bright_frac)
    return bright_pos, max(0.0, min(1.0, dim_pos))


def _nk_counts(p: Mapping, n_total: int) -> tuple[dict[str, int], dict]:
    nk = p["nk"]
    debris = float(nk.get("debris_frac", 0.05))
    doublet = float(nk.get("doublet_frac", 0.03))
    dead = float(nk.get("dead_frac", 0.06))
    counts = {"debris": round(n_total * debris), "doublet": round(n_total * doublet),
              "dead": round(n_total * dead)}
    n_cells = n_total - sum(counts.values())
    gran = float(nk.get("granulocyte_frac", 0.06))
    mono = float(nk.get("monocyte_frac", 0.15))
    c = _largest_remainder({"granulocyte": gran, "monocyte": mono, "lymph": 1 - gran - mono},
                           n_cells)
    n_l = c.pop("lymph")
    counts.update(c)
    nk_pct = float(nk.get("nk_pct_lymph", 12.0)) / 100
    b_pct = float(nk.get("b_pct_lymph", 8.0)) / 100
    lyc = _largest_remainder({"nk": nk_pct, "b_cell": b_pct, "t": 1 - nk_pct - b_pct}, n_l)
    t_pos = float(nk.get("t_nkg2a_pos_frac", 0.03))
    tp = round(lyc["t"] * t_pos)
    counts.update(b_cell=lyc["b_cell"], t_nkg2a_neg=lyc["t"] - tp, t_nkg2a_pos=tp)
    n_nk = lyc["nk"]
    bright_frac = float(nk.get("bright_frac", 0.10))
    target = float(nk["nkg2a_pct"]) / 100
    bp, dp = _nk_split(target, bright_frac, nk.get("bright_nkg2a_pos"))
    n_b = round(n_nk * bright_frac)
    n_d = n_nk - n_b
    n_pos = round(target * n_nk)
    n_bp = min(n_b, round(n_b * bp))
    n_dp = min(n_d, max(0, n_pos - n_bp))
    counts.update(nk_bright_nkg2a_pos=n_bp, nk_bright_nkg2a_neg=n_b - n_bp,
                  nk_dim_nkg2a_pos=n_dp, nk_dim_nkg2a_neg=n_d - n_dp)
    planted = {"nkg2a_pct_of_nk": float(nk["nkg2a_pct"]), "nk_pct_of_lymphocytes": nk_pct * 100,
               "nk_bright_share": bright_frac, "nkg2a_pct_bright": bp * 100,
               "nkg2a_pct_dim": dp * 100}
    return counts, planted


def _cart_counts(p: Mapping, design: Mapping, row: Mapping, n_target: int,
                 rng: np.random.Generator) -> tuple[dict[str, int], dict]:
    infusion = int(row.get("infusion") or 1)
    day = int(row["day"])
    inf = p["infusions"][infusion - 1]
    kin = next((k for k in p.get("cart", []) if int(k.get("infusion", 1)) == infusion), None)
    conc = cart_concentration(day, kin) if kin else 0.0
    abs_day = day + int(inf.get("day", 0))
    host = _host_blood(abs_day, {**design.get("host_blood", {}), **p.get("host_blood", {})})
    beads = float(row.get("beads_per_tube") or 50000)
    vol = float(row.get("blood_volume_ul") or 50)
    cd4 = float(p.get("cd4_share_t", 0.6))
    cart_cd4 = float(p.get("cart_cd4_share", 0.4))
    per_ul = {
        "granulocyte": host["gran"], "monocyte": host["mono"], "b_cell": host["b"],
        "nk_cell": host["nk"], "t_cd4": host["t"] * cd4, "t_cd8": host["t"] * (1 - cd4),
        "cart_cd4": conc * cart_cd4, "cart_cd8": conc * (1 - cart_cd4),
    }
    cells_tube = {k: v * vol for k, v in per_ul.items()}
    n_cells = sum(cells_tube.values())
    dead = 0.05 * n_cells
    debris = 0.12 * (n_cells + beads)
    doublet = 0.02 * n_cells
    everything = n_cells + dead + debris + doublet + beads
    frac = min(1.0, n_target / everything)
    expected = {"debris": debris * frac, "doublet": doublet * frac, "dead": dead * frac,
                "bead": beads * frac, **{k: v * frac for k, v in cells_tube.items()}}
    counts = {k: int(rng.poisson(v)) for k, v in expected.items()}
    planted = {
        "cart_per_ul": conc, "acquired_fraction": frac, "host_per_ul": host,
        "expected_events": expected,
        "car_pct_of_cd3_expected": 100 * conc / (conc + host["t"]) if conc + host["t"] > 0 else 0.0,
        "beads_per_tube": beads, "blood_volume_ul": vol, "infusion": infusion,
        "day_since_infusion": day,
    }
    return counts, planted


# --------------------------------------------------------------------------------------------
# Event generation
# --------------------------------------------------------------------------------------------


def _lognormal(rng, median, sd_log10, n):
    return median * np.power(10.0, rng.normal(0.0, sd_log10, n))


def _marker_values(rng, spec, n) -> np.ndarray:
    if spec is None or n == 0:
        return np.zeros(n)
    if isinstance(spec, tuple):
        return _lognormal(rng, spec[0], spec[1], n)
    out = np.zeros(n)
    u = rng.random(n)
    lo = 0.0
    for w, med, sd in spec:
        sel = (u >= lo) & (u < lo + w)
        lo += w
        k = int(sel.sum())
        if med is not None and k:
            out[sel] = _lognormal(rng, med, sd, k)
    return out


def _cells(rng, spec: Mapping, n: int, panel: _Panel, af_base: np.ndarray):
    """True (unspilled) signals of n cells of one population: fsc_a, fsc_h, ssc, F (n x nf)."""
    fsc = _lognormal(rng, spec["fsc"][0], spec["fsc"][1] / 2.3026, n)
    ssc = _lognormal(rng, spec["ssc"][0], spec["ssc"][1] / 2.3026, n)
    ratio = 0.90 - 0.10 * np.minimum(fsc, SAT) / SAT + rng.normal(0, 0.018, n)
    fsch = fsc * ratio
    nf = len(panel.markers)
    F = np.empty((n, nf))
    af = float(spec.get("af", 1.0))
    for j, m in enumerate(panel.markers):
        F[:, j] = _marker_values(rng, spec["markers"].get(m), n)
        if af > 0:
            F[:, j] += af_base[j] * af * np.power(10.0, rng.normal(0, 0.12, n))
    return fsc, fsch, ssc, F


@dataclass
class _Ctx:
    panel: _Panel
    kind: str
    names: tuple[str, ...]
    specs: dict
    spill: np.ndarray
    af_base: np.ndarray
    baseline: np.ndarray
    partner_names: list[str]
    partner_p: np.ndarray
    unstained: list[int]
    viability: int | None


def _gen_pop(rng, ctx: _Ctx, name: str, n: int):
    if name in ("doublet", "dead"):
        # built from (one or two) random partner cells of the cell mix
        parts = []
        for _ in range(2 if name == "doublet" else 1):
            lab = rng.choice(len(ctx.partner_names), size=n, p=ctx.partner_p)
            fa = np.empty(n); fh = np.empty(n); ss = np.empty(n)
            F = np.empty((n, len(ctx.panel.markers)))
            for k in np.unique(lab):
                sel = lab == k
                a, h, s, f = _cells(rng, ctx.specs[ctx.partner_names[k]], int(sel.sum()),
                                    ctx.panel, ctx.af_base)
                fa[sel], fh[sel], ss[sel], F[sel] = a, h, s, f
            parts.append((fa, fh, ss, F))
        if name == "doublet":
            (a1, h1, s1, f1), (a2, h2, s2, f2) = parts
            fa = a1 + a2
            fh = np.maximum(h1, h2) * rng.uniform(1.15, 1.45, n)
            return fa, np.minimum(fh, fa * 0.8), s1 + s2, f1 + f2
        fa, fh, ss, F = parts[0]
        shrink = rng.uniform(0.45, 0.8, n)
        F = F * rng.uniform(0.3, 0.8, (n, 1))
        if ctx.viability is not None:
            F[:, ctx.viability] += _lognormal(rng, 30000, 0.2, n)
        return fa * shrink, fh * shrink, ss * rng.uniform(0.8, 1.3, n), F
    if name == "debris":
        a, h, s, F = _cells(rng, ctx.specs["debris"], n, ctx.panel, ctx.af_base)
        a = a + 4000  # acquisition threshold on FSC
        return a, a * rng.uniform(0.7, 1.0, n), s, F
    return _cells(rng, ctx.specs[name], n, ctx.panel, ctx.af_base)


def _make_ctx(panel: _Panel, kind: str, counts: Mapping[str, int], specs: dict,
              unstained: Sequence[str]) -> _Ctx:
    names = POPULATIONS[kind]
    cell_names = [n for n in names if n not in NUCLEATED_EXCLUDE and counts.get(n, 0) > 0]
    w = np.array([counts[n] for n in cell_names], dtype=float)
    if w.sum() == 0:
        cell_names, w = ["debris"], np.array([1.0])
    af_base = np.array([_AF.get(f, 80) for f in panel.fluors], dtype=float)
    S = spillover_matrix(panel.fluors)
    base = af_base @ S  # lymphocyte autofluorescence as seen by each detector
    return _Ctx(panel, kind, names, specs, S, af_base, base, cell_names, w / w.sum(),
                [panel.markers.index(m) for m in unstained if m in panel.markers],
                panel.markers.index("Viability") if "Viability" in panel.markers else None)


def _specs_for(kind: str, p: Mapping, tube: str) -> dict:
    specs = dict(PHENOTYPES[kind])
    if kind == "bm":
        ab = dict(specs["pc_aberrant"])
        mk = dict(ab["markers"])
        phen = {**DEFAULT_ABERRANT, **(p.get("aberrant_phenotype") or {})}
        for m, lvl in phen.items():
            v = ABERRANT_LEVELS[m][lvl]
            if v is None:
                mk.pop(m, None)
            else:
                mk[m] = v
        lc = str(p.get("light_chain", "kappa")).lower()
        mk["IgK" if lc.startswith("k") else "IgL"] = (45000, 0.2)
        ab["markers"] = mk
        specs["pc_aberrant"] = ab
    return specs


def _event_times(rng, n: int, rate: float, clog: tuple[int, int] | None) -> np.ndarray:
    gaps = rng.exponential(1.0 / rate, n)
    if clog is not None:
        i0, i1 = clog
        gaps[i0:i1] /= 0.15  # the rate drops to ~15% while the line is partly blocked
        burst = min(n, i1 + max(1, (i1 - i0) // 4))
        gaps[i1:burst] *= 0.4  # released: a short burst
    t = np.cumsum(gaps) / TIMESTEP
    return t


def _chunks(ctx: _Ctx, labels: np.ndarray, times: np.ndarray, clog, seeds) -> Iterator[np.ndarray]:
    nf = len(ctx.panel.markers)
    n = labels.shape[0]
    for ci, s in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng(seeds[ci])
        lab = labels[s:s + CHUNK]
        m = lab.shape[0]
        fa = np.empty(m); fh = np.empty(m); ss = np.empty(m)
        F = np.empty((m, nf))
        for k in np.unique(lab):
            sel = lab == k
            a, h, sc, f = _gen_pop(rng, ctx, ctx.names[k], int(sel.sum()))
            fa[sel], fh[sel], ss[sel], F[sel] = a, h, sc, f
        if ctx.unstained:
            F[:, ctx.unstained] = 0.0
            # unstained channel keeps autofluorescence only: rebuild it from a lymphocyte-like AF
            for j in ctx.unstained:
                af = np.array([float(ctx.specs.get(ctx.names[k], {}).get("af", 1.0))
                               if ctx.names[k] in ctx.specs else 1.0 for k in range(len(ctx.names))])
                F[:, j] = ctx.af_base[j] * af[lab] * np.power(10.0, rng.normal(0, 0.12, m))
        if clog is not None:
            i0, i1 = clog
            idx = np.arange(s, s + m)
            inside = (idx >= i0) & (idx < i1)
            if inside.any():
                drift = 1.0 - 0.4 * (idx[inside] - i0) / max(1, i1 - i0)
                F[inside] *= drift[:, None]
                fa[inside] *= 0.5 + 0.5 * drift
                fh[inside] *= 0.5 + 0.5 * drift
                ss[inside] *= 0.7 + 0.3 * drift
        obs = F @ ctx.spill
        noise_sd = np.sqrt(_SIGMA_E ** 2 + _PHOTON * np.maximum(obs, 0.0))
        obs += rng.standard_normal(obs.shape) * noise_sd
        obs -= ctx.baseline
        out = np.empty((m, 4 + nf), dtype=np.float32)
        out[:, 0] = np.clip(fa + rng.normal(0, 300, m), 0, SAT)
        out[:, 1] = np.clip(fh + rng.normal(0, 300, m), 0, SAT)
        out[:, 2] = np.clip(ss + rng.normal(0, 200, m), 0, SAT)
        out[:, 3:3 + nf] = np.minimum(obs, SAT)
        out[:, 3 + nf] = times[s:s + m]
        yield out


def _seed_seq(seed: int, sample_id: str, tube: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(sample_id.encode()),
                                   zlib.crc32(tube.encode())])


def _fingerprint(row: Mapping, p: Mapping, design: Mapping, seed: int, scale: float) -> str:
    keep = {k: design.get(k) for k in ("events", "schedule", "cart_tube", "host_blood",
                                       "instrument", "clog_files")}
    blob = json.dumps({"v": SIM_VERSION, "row": {k: str(row.get(k, "")) for k in SAMPLE_COLUMNS},
                       "patient": p, "design": keep, "seed": seed, "scale": scale},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _n_events(design: Mapping, row: Mapping, p: Mapping, scale: float) -> int:
    ev = {"bm_baseline": 200_000, "bm_week4": 1_200_000, "pb_nk": 100_000, "pb_cart": 50_000,
          **(design.get("events") or {}), **(p.get("events") or {})}
    if row["specimen"] == "BM":
        key = "bm_baseline" if row["visit"] == "baseline" else "bm_week4"
    elif row["panel"] == "pb_nk":
        key = "pb_nk"
    else:
        key = "pb_cart"
    return max(100, int(round(float(ev[key]) * scale)))


def _date(p: Mapping, row: Mapping) -> _dt.date:
    inf = p["infusions"][int(row.get("infusion") or 1) - 1]
    d0 = inf.get("date")
    if d0 is None:
        d0 = _dt.date.fromisoformat(str(p["infusions"][0]["date"])) + _dt.timedelta(
            days=int(inf.get("day", 0)))
    elif not isinstance(d0, _dt.date):
        d0 = _dt.date.fromisoformat(str(d0))
    return d0 + _dt.timedelta(days=int(row["day"]))


def simulate_file(row: Mapping, design: Mapping, outdir: str | os.PathLike, seed: int = 596,
                  events_scale: float = 1.0, force: bool = False) -> dict:
    """Simulate one tube (a sample-sheet row). Returns its truth dict (also written as JSON)."""
    outdir = Path(outdir)
    pid = row["patient_id"]
    p = design["patients"][pid]
    fcs = outdir / row["fcs"]
    stem = fcs.with_suffix("")
    truth_path = Path(str(stem) + ".truth.json")
    labels_path = Path(str(stem) + ".labels.npz")
    fp = _fingerprint(row, p, design, seed, events_scale)
    if not force and truth_path.exists() and fcs.exists() and labels_path.exists():
        try:
            old = json.loads(truth_path.read_text())
            if old.get("fingerprint") == fp:
                old["skipped"] = True
                return old
        except (OSError, ValueError):
            pass
    for q in (truth_path,):  # a stale truth must never sit beside a new FCS
        if q.exists():
            q.unlink()

    t_start = _time.perf_counter()
    panel = _load_panel(row["panel"], Path(design.get("panels_dir", PANELS_DIR)))
    kind = _KIND[row["panel"]]
    ss = _seed_seq(seed, row["sample_id"], row["tube"])
    main_seed, chunk_root = ss.spawn(2)
    rng = np.random.default_rng(main_seed)
    n_target = _n_events(design, row, p, events_scale)

    if kind == "bm":
        counts, planted = _bm_counts(p, row["visit"], n_target, row["tube"])
    elif kind == "nk":
        counts, planted = _nk_counts(p, n_target)
    else:
        counts, planted = _cart_counts(p, design, row, n_target, rng)
    names = POPULATIONS[kind]
    counts = {n: int(counts.get(n, 0)) for n in names}
    unstained = []
    if row.get("role") == "fmo" or row["tube"] == "nk_fmo":
        unstained = [m for m in str(row.get("fmo_marker") or "CD159a").replace(";", ",").split(",")
                     if m.strip()]
        unstained = [m.strip() for m in unstained]
    specs = _specs_for(kind, p, row["tube"])
    ctx = _make_ctx(panel, kind, counts, specs, unstained)

    labels = np.repeat(np.arange(len(names), dtype=np.uint8), [counts[n] for n in names])
    rng.shuffle(labels)
    n = int(labels.shape[0])

    stem_name = Path(row["fcs"]).stem
    clog = None
    clog_cfg = (design.get("clog_files") or {})
    if isinstance(clog_cfg, list):
        clog_cfg = {k: {} for k in clog_cfg}
    if stem_name in clog_cfg and n >= 1000:
        c = clog_cfg[stem_name] or {}
        i0 = int(n * float(c.get("start", rng.uniform(0.35, 0.7))))
        i1 = min(n, i0 + max(50, int(n * float(c.get("length", 0.04)))))
        clog = (i0, i1)
    rate = float({"bm": 6000, "nk": 2500, "cart": 1500}[kind])
    times = _event_times(rng, n, rate, clog)
    clog_mask = np.zeros(n, dtype=bool)
    if clog is not None:
        clog_mask[clog[0]:clog[1]] = True

    inst = {"cyt": "FACSCanto II", "cytsn": "V33896201", "inst": "Core flow lab (simulated)",
            **(design.get("instrument") or {})}
    date = _date(p, row)
    btim_s = int(rng.uniform(8.5, 16.5) * 3600)
    dur = float(times[-1]) * TIMESTEP if n else 0.0
    etim_s = btim_s + int(math.ceil(dur))

    def hms(s):
        return f"{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

    pnn = ["FSC-A", "FSC-H", "SSC-A", *panel.detectors, "Time"]
    pns: list[str | None] = [None, None, None]
    for m, f in zip(panel.markers, panel.fluors):
        pns.append(None if m in unstained else f"{m} {f}")
    pns.append(None)
    meta: dict[str, Any] = {
        "$CYT": inst["cyt"], "$CYTSN": inst["cytsn"], "$INST": inst["inst"],
        "CREATOR": f"mrdflow-simulate {SIM_VERSION}",
        "$DATE": date.strftime("%d-%b-%Y").upper(), "$BTIM": hms(btim_s), "$ETIM": hms(etim_s),
        "$TIMESTEP": f"{TIMESTEP}", "$SRC": row["sample_id"], "$FIL": Path(row["fcs"]).name,
        "TUBE NAME": row["tube"], "EXPERIMENT NAME": f"CT0596 {row['panel']}",
        "$SPILLOVER": format_spillover(panel.detectors, ctx.spill),
        "$ABRT": "0", "$LOST": "0",
    }
    for i, name in enumerate(pnn, start=1):
        key = "FSC" if name.startswith("FSC") else "SSC" if name.startswith("SSC") else None
        if name == "Time":
            continue
        v = _VOLTAGES.get(key) if key else _VOLTAGES.get(panel.fluors[i - 4])
        if v:
            meta[f"$P{i}V"] = str(v)
    n_chunks = max(1, math.ceil(n / CHUNK))
    seeds = chunk_root.spawn(n_chunks)
    fcs.parent.mkdir(parents=True, exist_ok=True)
    t_range = max(PNR, 2 ** math.ceil(math.log2(float(times[-1]) + 2)))  # Time may outrun 2^18
    pnr = [PNR] * (len(pnn) - 1) + [t_range]
    write_fcs(fcs, _chunks(ctx, labels, times, clog, seeds), pnn, pns, meta, pnr=pnr)

    tmp = labels_path.with_name("." + labels_path.name + ".part.npz")
    np.savez_compressed(tmp, labels=labels, names=np.array(names), clog=clog_mask)
    os.replace(tmp, labels_path)

    # ---- truth ----
    real = {nm: int(c) for nm, c in zip(names, np.bincount(labels, minlength=len(names)))}
    nucleated = sum(c for nm, c in real.items() if nm not in NUCLEATED_EXCLUDE)
    truth: dict[str, Any] = {
        "file": row["fcs"], "sample_id": row["sample_id"], "patient_id": pid,
        "specimen": row["specimen"], "visit": row["visit"], "day": int(row["day"]),
        "infusion": int(row.get("infusion") or 1), "tube": row["tube"], "panel": row["panel"],
        "role": row.get("role", "stain"), "seed": int(seed), "events_scale": float(events_scale),
        "simulator_version": SIM_VERSION, "fingerprint": fp, "n_events": n,
        "populations": list(names), "counts": real,
        "nucleated_definition": NUCLEATED_DEFINITION, "n_nucleated": nucleated,
        "planted": planted, "unstained_markers": unstained,
        "clog": {"present": clog is not None,
                 "event_start": clog[0] if clog else None, "event_end": clog[1] if clog else None,
                 "time_start": float(times[clog[0]]) if clog else None,
                 "time_end": float(times[clog[1] - 1]) if clog else None,
                 "time_units": f"Time channel units ($TIMESTEP {TIMESTEP} s)"},
        "acquisition_s": dur,
    }
    if kind == "bm":
        pcn = real["pc_normal_kappa"] + real["pc_normal_lambda"]
        truth.update(
            pc_pct_of_nucleated=100 * (pcn + real["pc_aberrant"]) / nucleated if nucleated else 0,
            aberrant_pc=real["pc_aberrant"], normal_pc=pcn,
            aberrant_pct_of_nucleated=100 * real["pc_aberrant"] / nucleated if nucleated else 0,
            normal_pc_kappa=real["pc_normal_kappa"], normal_pc_lambda=real["pc_normal_lambda"],
            normal_pc_kappa_lambda_ratio=(real["pc_normal_kappa"] / real["pc_normal_lambda"]
                                          if real["pc_normal_lambda"] else None),
            aberrant_light_chain=str(p.get("light_chain", "kappa")).lower(),
            aberrant_phenotype={**DEFAULT_ABERRANT, **(p.get("aberrant_phenotype") or {})},
            light_chains_measured=row["panel"] == "ngf_tube2",
            hemodilution_markers={k: real[k] for k in ("mast_cell", "b_precursor",
                                                       "erythroblast")},
        )
    elif kind == "nk":
        nk_pos_b, nk_neg_b = real["nk_bright_nkg2a_pos"], real["nk_bright_nkg2a_neg"]
        nk_pos_d, nk_neg_d = real["nk_dim_nkg2a_pos"], real["nk_dim_nkg2a_neg"]
        nk_all = nk_pos_b + nk_neg_b + nk_pos_d + nk_neg_d
        lymph = nk_all + real["t_nkg2a_neg"] + real["t_nkg2a_pos"] + real["b_cell"]

        def pct(a, b):
            return 100 * a / b if b else None

        truth.update(
            nk_cells=nk_all, lymphocytes=lymph,
            lymphocyte_definition="viable single T + NK + B cells",
            nkg2a_pct_of_nk=pct(nk_pos_b + nk_pos_d, nk_all),
            nkg2a_pct_of_nk_bright=pct(nk_pos_b, nk_pos_b + nk_neg_b),
            nkg2a_pct_of_nk_dim=pct(nk_pos_d, nk_pos_d + nk_neg_d),
            nk_pct_of_lymphocytes=pct(nk_all, lymph),
            nk_bright_pct_of_nk=pct(nk_pos_b + nk_neg_b, nk_all),
            fmo=row["tube"] == "nk_fmo",
        )
    else:
        car = real["cart_cd4"] + real["cart_cd8"]
        cd3 = car + real["t_cd4"] + real["t_cd8"]
        beads = real["bead"]
        truth.update(
            car_t_events=car, cd3_events=cd3, bead_events=beads,
            car_pct_of_cd3=100 * car / cd3 if cd3 else None,
            cart_per_ul_planted=planted["cart_per_ul"],
            cart_per_ul=(car / beads * planted["beads_per_tube"] / planted["blood_volume_ul"]
                         if beads else None),
            cart_per_ul_definition="CAR+ CD3+ viable events / bead events x beads_per_tube / "
                                   "blood_volume_ul (from the planted labels)",
            beads_per_tube=planted["beads_per_tube"], blood_volume_ul=planted["blood_volume_ul"],
        )
    truth["seconds_to_simulate"] = round(_time.perf_counter() - t_start, 3)
    tmp = truth_path.with_name("." + truth_path.name + ".part")
    tmp.write_text(json.dumps(truth, indent=1, default=float))
    os.replace(tmp, truth_path)
    return truth


# --------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------
_TSV_FIELDS = [
    "file", "sample_id", "patient_id", "specimen", "visit", "day", "infusion", "tube", "panel",
    "role", "n_events", "n_nucleated", "pc_pct_of_nucleated", "aberrant_pc", "normal_pc",
    "normal_pc_kappa", "normal_pc_lambda", "aberrant_light_chain", "nkg2a_pct_of_nk",
    "nkg2a_pct_of_nk_bright", "nkg2a_pct_of_nk_dim", "nk_pct_of_lymphocytes", "car_t_events",
    "cd3_events", "bead_events", "car_pct_of_cd3", "cart_per_ul", "cart_per_ul_planted",
    "clog_present", "clog_time_start", "clog_time_end",
]


def _tsv_row(t: Mapping) -> dict:
    r = {k: t.get(k, "") for k in _TSV_FIELDS}
    r["clog_present"] = t["clog"]["present"]
    r["clog_time_start"] = t["clog"]["time_start"] if t["clog"]["present"] else ""
    r["clog_time_end"] = t["clog"]["time_end"] if t["clog"]["present"] else ""
    return {k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
            for k, v in r.items()}


def _run_one(args):
    row, design, outdir, seed, scale = args
    return simulate_file(row, design, outdir, seed, scale)


def simulate_cohort(samples_tsv, design_yaml, outdir, seed: int = 596, events_scale: float = 1.0,
                    jobs: int = 1, only: Sequence[str] | str | None = None,
                    verbose: bool = False) -> list[dict]:
    """Write every file of the sample sheet under ``outdir`` (+ labels and truth per file and
    ``truth.tsv``). Files whose truth matches (same seed, scale, design, simulator) are skipped.
    ``only`` restricts to sample ids, patient ids or fcs paths."""
    design = load_design(design_yaml)
    rows = read_samples_tsv(samples_tsv)
    if only:
        sel = {only} if isinstance(only, str) else set(only)
        rows = [r for r in rows if r["sample_id"] in sel or r["patient_id"] in sel
                or r["fcs"] in sel]
    scale = float(events_scale) * float(design.get("events_scale", 1.0))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    work = sorted(rows, key=lambda r: -_n_events(design, r, design["patients"][r["patient_id"]],
                                                 scale))
    truths: dict[str, dict] = {}
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            futs = {ex.submit(_run_one, (r, design, outdir, seed, scale)): r for r in work}
            for f in as_completed(futs):
                t = f.result()
                truths[t["file"]] = t
                if verbose:
                    print(f"{t['file']}: {t['n_events']} events", file=sys.stderr)
    else:
        for r in work:
            t = simulate_file(r, design, outdir, seed, scale)
            truths[t["file"]] = t
            if verbose:
                print(f"{t['file']}: {t['n_events']} events", file=sys.stderr)
    ordered = [truths[r["fcs"]] for r in rows]
    # truth.tsv lists every file present with a truth (so `only` runs keep the others' rows)
    all_truth = {}
    for r in read_samples_tsv(samples_tsv):
        tp = outdir / (str(Path(r["fcs"]).with_suffix("")) + ".truth.json")
        if tp.exists():
            all_truth[r["fcs"]] = json.loads(tp.read_text())
    tmp = outdir / ".truth.tsv.part"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, _TSV_FIELDS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for t in all_truth.values():
            w.writerow(_tsv_row(t))
    os.replace(tmp, outdir / "truth.tsv")
    return ordered


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mrdflow-simulate",
                                 description="Simulate the FCS files of a sample sheet "
                                             "(with per-file truth) from a design file.")
    ap.add_argument("--samples", default=str(_REPO / "resources/demo/samples.tsv"))
    ap.add_argument("--design", default=str(_REPO / "resources/demo/design.yaml"))
    ap.add_argument("--out", required=False, default="data/demo")
    ap.add_argument("--seed", type=int, default=596)
    ap.add_argument("--events-scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="sample ids, patient ids or fcs paths")
    ap.add_argument("--write-samples", metavar="TSV",
                    help="write the sample sheet implied by --design to TSV and exit")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.write_samples:
        write_samples_tsv(make_samples(load_design(a.design)), a.write_samples)
        return 0
    t0 = _time.perf_counter()
    ts = simulate_cohort(a.samples, a.design, a.out, seed=a.seed, events_scale=a.events_scale,
                         jobs=a.jobs, only=a.only, verbose=not a.quiet)
    made = sum(1 for t in ts if not t.get("skipped"))
    print(f"{len(ts)} files ({made} simulated, {len(ts) - made} up to date) in "
          f"{_time.perf_counter() - t0:.1f} s -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
