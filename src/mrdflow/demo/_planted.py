"""Planted quantities: how many events of each population a tube holds (exact counts for marrow
and NK tubes, Poisson counts from cells/uL for CAR-T tubes), the CAR-T kinetics and the host's
blood after lymphodepletion, and the values planted (returned beside the counts, saved as truth)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._design import bead_channel


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
    if "nk_factor" in p:  # a biology with fewer NK cells (e.g. after anti-CD38 antibodies)
        normal["nk_cell"] *= float(p["nk_factor"])
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
    if "nk_factor" in p:
        planted["nk_factor"] = float(p["nk_factor"])
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
    if "nk_factor" in p:  # a biology with fewer NK cells (e.g. after anti-CD38 antibodies)
        host["nk"] *= float(p["nk_factor"])
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
    if bead_channel(design) != "own":  # only then: today's truths stay as they were
        planted["bead_channel"] = bead_channel(design)
    return counts, planted



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

