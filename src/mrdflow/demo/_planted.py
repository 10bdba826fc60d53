"""Planted quantities: how many events of each population a tube holds (exact counts for marrow
and NK tubes, Poisson counts from cells/uL for CAR-T tubes), the CAR-T kinetics (with the planted
baseline-NKG2A relation), the host's blood after lymphodepletion with its NK cells over time, and
the values planted (returned beside the counts, saved as truth).

Host NK cells over time (a design's ``nk_kinetics``, cohort defaults under each patient's own;
days since infusion 1; see :func:`nk_fraction`): the baseline count (``baseline_per_ul``, or from
the patient's ``nk.nk_pct_lymph`` and the host's T and B cells) holds until lymphodepletion starts
(``ld_day``, -5), falls linearly to ``nadir`` x baseline on day 0 and recovers towards baseline
with time constant ``tau`` days: ``nadir + (1 - nadir) * (1 - exp(-t / tau))``. A later infusion
does not deplete again (the demo's assumption for PT04's second dose). NKG2A+ % of NK cells and
the CD56bright share rise early during reconstitution and return to baseline: ``baseline + excess
* (t / peak_day) * exp(1 - t / peak_day)`` (``nkg2a_excess`` points, ``bright_excess`` of NK
cells, at ``nkg2a_peak_day``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._design import bead_channel, infusion_starts, nk_tube_config

#: Cohort defaults of ``nk_kinetics`` (module docstring). recovery_fraction: the level (x the
#: baseline count) whose first reaching after infusion 1 is the planted ``nk_recovery_day``.
NK_KINETICS = {"ld_day": -5, "nadir": 0.1, "tau": 20.0, "nkg2a_excess": 20.0, "nkg2a_peak_day": 14.0,
               "bright_excess": 0.10, "recovery_fraction": 0.5}

#: ``nkg2a_cart_relation`` defaults: the patients' ``cart`` values are written for ``negative``.
RELATION = {"direction": "negative", "center": 20.0, "cmax_log_per_10": 1.0, "k_fast_log_per_10": 0.2}
_SIGN = {"negative": -1, "none": 0, "positive": 1}


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


def nkg2a_cart_relation(design: Mapping) -> dict:
    """The design's ``nkg2a_cart_relation`` with its defaults (direction refused unless negative,
    none or positive)."""
    rel = {**RELATION, **(design.get("nkg2a_cart_relation") or {})}
    if rel["direction"] not in _SIGN:
        raise ValueError(f"design nkg2a_cart_relation.direction: {rel['direction']!r} is not one of "
                         f"{list(_SIGN)}")
    return rel


def relation_factors(design: Mapping, nkg2a_pct: float) -> tuple[float, float]:
    """(factor on cmax, factor on k_fast) that the relation's direction applies to a patient's
    written CAR-T kinetics (written for ``negative``: (1, 1) there). With x the baseline NKG2A %
    and s the direction's sign (-1, 0, +1): cmax x exp((s + 1) * a * (x - center) / 10), k_fast x
    exp(-(s + 1) * b * (x - center) / 10) (a, b: ``cmax_log_per_10``, ``k_fast_log_per_10``)."""
    rel = nkg2a_cart_relation(design)
    shift = (_SIGN[rel["direction"]] + 1) * (float(nkg2a_pct) - float(rel["center"])) / 10
    return (math.exp(shift * float(rel["cmax_log_per_10"])),
            math.exp(-shift * float(rel["k_fast_log_per_10"])))


def cart_kinetics(design: Mapping, p: Mapping, infusion: int) -> dict | None:
    """The planted CAR-T kinetics of one infusion: the patient's ``cart`` entry with the
    NKG2A relation applied (:func:`relation_factors`), or None when the patient has none."""
    kin = next((k for k in p.get("cart", []) if int(k.get("infusion", 1)) == infusion), None)
    if kin is None:
        return None
    nkg2a = (p.get("nk") or {}).get("nkg2a_pct")
    if nkg2a is None:
        return dict(kin)
    fc, fk = relation_factors(design, nkg2a)
    if fc == 1.0 and fk == 1.0:
        return dict(kin)
    return {**kin, "cmax": float(kin["cmax"]) * fc, "k_fast": float(kin.get("k_fast", 0.15)) * fk}


def nk_kinetics(design: Mapping, p: Mapping) -> dict:
    """The patient's NK kinetics: :data:`NK_KINETICS` under the design's ``nk_kinetics`` under
    the patient's own."""
    return {**NK_KINETICS, **(design.get("nk_kinetics") or {}), **(p.get("nk_kinetics") or {})}


def _host_base(design: Mapping, p: Mapping) -> dict:
    return {**design.get("host_blood", {}), **p.get("host_blood", {})}


def nk_baseline_per_ul(design: Mapping, p: Mapping) -> float:
    """The patient's host NK cells/uL before lymphodepletion: ``nk_kinetics.baseline_per_ul``;
    else the count that makes NK cells ``nk.nk_pct_lymph`` % of the blood's lymphocytes (with
    the host's T and B cells, ``host_blood``); else ``host_blood.nk`` (x the biology's
    ``nk_factor``)."""
    k = nk_kinetics(design, p)
    if k.get("baseline_per_ul") is not None:
        return float(k["baseline_per_ul"])
    base = _host_base(design, p)
    pct = (p.get("nk") or {}).get("nk_pct_lymph")
    if pct is not None:
        f = float(pct) / 100
        return f / (1 - f) * (float(base.get("t", 900)) + float(base.get("b", 60)))
    return float(base.get("nk", 150)) * float(p.get("nk_factor", 1.0))


def nk_fraction(day: float, k: Mapping) -> float:
    """Host NK cells/uL at ``day`` (since infusion 1) as a fraction of the baseline (module
    docstring)."""
    d, ld, nadir = float(day), float(k["ld_day"]), float(k["nadir"])
    if d <= ld:
        return 1.0
    if d < 0:
        return 1.0 + (nadir - 1.0) * (d - ld) / (0.0 - ld)
    return nadir + (1.0 - nadir) * (1.0 - math.exp(-d / float(k["tau"])))


def _pulse(day: float, peak_day: float) -> float:
    """0 before infusion 1, rising to 1 at ``peak_day``, then back towards 0."""
    t = float(day) / float(peak_day)
    return t * math.exp(1.0 - t) if t > 0 else 0.0


def nk_planted(day: float, design: Mapping, p: Mapping) -> dict[str, float]:
    """The host NK compartment planted at ``day`` since infusion 1: cells/uL, NKG2A+ % of NK
    cells and the CD56bright share of NK cells."""
    k = nk_kinetics(design, p)
    nk = p.get("nk") or {}
    pulse = _pulse(day, k["nkg2a_peak_day"])
    nkg2a = min(95.0, float(nk["nkg2a_pct"]) + float(k["nkg2a_excess"]) * pulse)
    bright = min(0.6, float(nk.get("bright_frac", 0.10)) + float(k["bright_excess"]) * pulse)
    return {"nk_cells_per_ul": nk_baseline_per_ul(design, p) * nk_fraction(day, k),
            "nkg2a_pct": nkg2a, "bright_frac": bright}


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


def _marrow_spec(p: Mapping, visit: str, day: int | None) -> dict:
    """The planted marrow of a visit: ``bm_baseline``, ``bm_week4``, or the ``bm_followup`` entry
    of the day (since infusion 1)."""
    if visit == "followup":
        spec = next((m for m in p.get("bm_followup") or [] if int(m["day"]) == day), None)
        if spec is None:
            raise ValueError(f"no bm_followup entry for day {day}")
        return spec
    return p.get("bm_baseline" if visit == "baseline" else "bm_week4", {})


def _bm_counts(p: Mapping, visit: str, n_total: int, tube: str,
               day: int | None = None) -> tuple[dict[str, int], dict]:
    """Exact population counts for one NGF tube, and the planted values. ``day``: since
    infusion 1 (picks a later marrow's ``bm_followup`` entry)."""
    bm = _marrow_spec(p, visit, day)
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
        positive = bool(bm.get("mrd_positive", lvl * 2.2e6 >= 20))
        planted.update(aberrant_level_of_nucleated=lvl,
                       normal_pc_level_of_nucleated=float(bm.get("normal_pc_level", 2e-4)))
        planted["week4_mrd_positive" if visit == "week4" else "mrd_positive"] = positive
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


def _nk_subsets(n_nk: int, nkg2a_pct: float, bright_frac: float,
                bright_pos: float | None) -> tuple[dict[str, int], dict]:
    """Exact counts of the four NK subsets (CD56bright/dim x NKG2A+/-) of ``n_nk`` NK cells."""
    target = float(nkg2a_pct) / 100
    bp, dp = _nk_split(target, bright_frac, bright_pos)
    n_b = round(n_nk * bright_frac)
    n_d = n_nk - n_b
    n_pos = round(target * n_nk)
    n_bp = min(n_b, round(n_b * bp))
    n_dp = min(n_d, max(0, n_pos - n_bp))
    counts = {"nk_bright_nkg2a_pos": n_bp, "nk_bright_nkg2a_neg": n_b - n_bp,
              "nk_dim_nkg2a_pos": n_dp, "nk_dim_nkg2a_neg": n_d - n_dp}
    planted = {"nkg2a_pct_of_nk": float(nkg2a_pct), "nk_bright_share": bright_frac,
               "nkg2a_pct_bright": bp * 100, "nkg2a_pct_dim": dp * 100}
    return counts, planted


def _nk_counts(p: Mapping, n_total: int, design: Mapping | None = None, row: Mapping | None = None,
               beads: bool = False) -> tuple[dict[str, int], dict]:
    """Exact population counts of one PB NK tube, and the planted values. Without beads (panel
    pb_nk): a PBMC-like preparation in fixed fractions (few granulocytes; NK cells
    ``nk.nk_pct_lymph`` % of lymphocytes), NKG2A at the row's day (:func:`nk_planted`; at baseline
    the patient's ``nk.nkg2a_pct``). With beads: :func:`_nk_blood_counts`."""
    if beads:
        return _nk_blood_counts(p, design or {}, row or {}, n_total)
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
    nkg2a, bright = float(nk["nkg2a_pct"]), float(nk.get("bright_frac", 0.10))
    day1 = _day_since_infusion1(p, row) if row else None
    if day1 is not None and day1 > 0 and design is not None:  # a serial tube: NKG2A over time
        at = nk_planted(day1, design, p)
        nkg2a, bright = at["nkg2a_pct"], at["bright_frac"]
    sub, sub_planted = _nk_subsets(lyc["nk"], nkg2a, bright, nk.get("bright_nkg2a_pos"))
    counts.update(sub)
    planted = {"nkg2a_pct_of_nk": sub_planted["nkg2a_pct_of_nk"], "nk_pct_of_lymphocytes": nk_pct * 100,
               **{k: v for k, v in sub_planted.items() if k != "nkg2a_pct_of_nk"}}
    if day1 is not None and day1 > 0:
        planted["day_since_infusion1"] = day1
    return counts, planted


def _day_since_infusion1(p: Mapping, row: Mapping) -> int:
    """A sheet row's day counted from infusion 1."""
    k = int(row.get("infusion") or 1)
    return int(row["day"]) + infusion_starts(p)[k - 1]


def _cart_in_blood(design: Mapping, p: Mapping, row: Mapping) -> float:
    """CAR-T cells/uL in the blood of a PB sample: the curve of the infusion the row counts from
    (as its CAR-T tube plants them)."""
    infusion = int(row.get("infusion") or 1)
    kin = cart_kinetics(design, p, infusion)
    return cart_concentration(int(row["day"]), kin) if kin else 0.0


def _nk_blood_counts(p: Mapping, design: Mapping, row: Mapping, n_total: int) -> tuple[dict[str, int], dict]:
    """Exact population counts of a PB NK tube with counting beads: whole blood (lyse, no wash;
    a Trucount-like tube), ``blood_volume_ul`` of it with ``beads_per_tube`` beads, in the
    host's proportions on the row's day (:func:`_host_blood`, with the NK cells of
    :func:`nk_planted` and the CAR-T cells, CD3+ and NKG2A-negative: the product's NKG2A is
    knocked out). ``n_total`` events are acquired from the tube in these proportions, rounded by
    largest remainder, so NK events / bead events x beads_per_tube / blood_volume_ul is the
    planted NK cells/uL up to that rounding."""
    nk = p["nk"]
    day1 = _day_since_infusion1(p, row)
    at = nk_planted(day1, design, p)
    base = _host_base(design, p)
    k = nk_kinetics(design, p)
    host = dict(base) if day1 <= float(k["ld_day"]) else _host_blood(day1, base)  # before / after LD
    t_host, b_host = float(host.get("t", 900)), float(host.get("b", 60))
    cart = _cart_in_blood(design, p, row) if day1 > 0 else 0.0
    cfg = nk_tube_config(design) or {}
    beads = float(row.get("beads_per_tube") or cfg.get("beads_per_tube", 50000))
    vol = float(row.get("blood_volume_ul") or cfg.get("blood_volume_ul", 50))
    t_pos = float(nk.get("t_nkg2a_pos_frac", 0.03))
    per_ul = {"granulocyte": float(host.get("gran", 3000)), "monocyte": float(host.get("mono", 400)),
              "b_cell": b_host, "t_nkg2a_neg": t_host * (1 - t_pos) + cart, "t_nkg2a_pos": t_host * t_pos,
              "nk": at["nk_cells_per_ul"]}
    cells = sum(per_ul.values()) * vol
    weights = {"debris": 0.12 * (cells + beads), "doublet": 0.02 * cells, "dead": 0.05 * cells,
               "bead": beads, **{n: v * vol for n, v in per_ul.items()}}
    counts = _largest_remainder(weights, n_total)
    sub, sub_planted = _nk_subsets(counts.pop("nk"), at["nkg2a_pct"], at["bright_frac"],
                                   nk.get("bright_nkg2a_pos"))
    counts.update(sub)
    lymph = per_ul["b_cell"] + per_ul["t_nkg2a_neg"] + per_ul["t_nkg2a_pos"] + per_ul["nk"]
    planted = {**sub_planted, "nk_pct_of_lymphocytes": 100 * per_ul["nk"] / lymph if lymph else 0.0,
               "nk_cells_per_ul": at["nk_cells_per_ul"], "nk_fraction_of_baseline": nk_fraction(day1, k),
               "nk_baseline_per_ul": nk_baseline_per_ul(design, p), "day_since_infusion1": day1,
               "cart_per_ul_in_blood": cart, "host_per_ul": per_ul,
               "acquired_fraction": n_total / sum(weights.values()),
               "beads_per_tube": beads, "blood_volume_ul": vol,
               "nk_kinetics": {kk: k[kk] for kk in ("ld_day", "nadir", "tau", "nkg2a_excess",
                                                    "nkg2a_peak_day", "bright_excess")}}
    return counts, planted


def _cart_counts(p: Mapping, design: Mapping, row: Mapping, n_target: int,
                 rng: np.random.Generator) -> tuple[dict[str, int], dict]:
    infusion = int(row.get("infusion") or 1)
    day = int(row["day"])
    inf = p["infusions"][infusion - 1]
    kin = cart_kinetics(design, p, infusion)
    conc = cart_concentration(day, kin) if kin else 0.0
    abs_day = day + int(inf.get("day", 0))
    host = _host_blood(abs_day, {**design.get("host_blood", {}), **p.get("host_blood", {})})
    if nk_tube_config(design) is not None:  # NK tubes count the host's NK cells: the same blood here
        host["nk"] = nk_planted(abs_day, design, p)["nk_cells_per_ul"]
    elif "nk_factor" in p:  # a biology with fewer NK cells (e.g. after anti-CD38 antibodies)
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
    written = next((k for k in p.get("cart", []) if int(k.get("infusion", 1)) == infusion), None)
    if kin is not None and kin != written:  # the relation moved the written kinetics
        planted["cart_kinetics"] = kin
        planted["nkg2a_cart_relation"] = nkg2a_cart_relation(design)
    return counts, planted



def _n_events(design: Mapping, row: Mapping, p: Mapping, scale: float) -> int:
    """Events acquired in a tube: the design's ``events`` (the patient's over the cohort's) by
    tube kind: bm_baseline / bm_week4 / bm_followup (later marrows; default bm_week4's) per NGF
    tube, pb_nk (baseline NK tube and its FMO) / pb_nk_serial (later NK tubes; default pb_nk's),
    pb_cart."""
    ev = {"bm_baseline": 200_000, "bm_week4": 1_200_000, "pb_nk": 100_000, "pb_cart": 50_000,
          **(design.get("events") or {}), **(p.get("events") or {})}
    ev.setdefault("bm_followup", ev["bm_week4"])
    ev.setdefault("pb_nk_serial", ev["pb_nk"])
    if row["specimen"] == "BM":
        key = {"baseline": "bm_baseline", "followup": "bm_followup"}.get(row["visit"], "bm_week4")
    elif row["panel"] == "pb_nk" or row["tube"] in ("nk", "nk_fmo"):
        key = "pb_nk" if row["visit"] in ("baseline", "screening") else "pb_nk_serial"
    else:
        key = "pb_cart"
    return max(100, int(round(float(ev[key]) * scale)))


def patient_truths(design: Mapping, rows: Sequence[Mapping]) -> dict[str, dict[str, Any]]:
    """Per patient, what the design plants over time and the sheet ``rows`` let a pipeline see:
    ``nk_baseline_cells_per_ul`` (the baseline NK tube's planted count; None when that tube has
    no counting beads), ``nk_recovery_level`` (``nk_kinetics.recovery_fraction`` x it) and
    ``nk_recovery_day``: the first NK tube with beads after infusion 1 (day since infusion 1)
    whose planted count reaches the level; None, with ``nk_recovery_reason``, when none does or
    there is no baseline count."""
    from ._biology import effective_patient

    out: dict[str, dict[str, Any]] = {}
    for pid in dict.fromkeys(r["patient_id"] for r in rows):
        p = effective_patient(design, pid, design["patients"][pid])
        k = nk_kinetics(design, p)
        tubes = sorted(((_day_since_infusion1(p, r), bool(str(r.get("beads_per_tube") or "").strip()))
                        for r in rows if r["patient_id"] == pid and r["tube"] == "nk"
                        and r.get("role", "stain") == "stain"), key=lambda t: t[0])
        pre = [t for t in tubes if t[0] <= 0]
        post = [d for d, beads in tubes if d > 0 and beads]
        rec: dict[str, Any] = {"nk_baseline_cells_per_ul": None, "nk_recovery_level": None,
                               "nk_recovery_day": None}
        if not pre or not pre[-1][1]:
            rec["nk_recovery_reason"] = "no baseline NK count (no counting beads in the baseline NK tube)"
        else:
            base = nk_planted(pre[-1][0], design, p)["nk_cells_per_ul"]
            level = float(k["recovery_fraction"]) * base
            day = next((d for d in post if nk_planted(d, design, p)["nk_cells_per_ul"] >= level), None)
            rec.update(nk_baseline_cells_per_ul=base, nk_recovery_level=level, nk_recovery_day=day)
            rec["nk_recovery_reason"] = (f"first NK tube >= {k['recovery_fraction']:g} x baseline"
                                         if day is not None else
                                         f"not reached {k['recovery_fraction']:g} x baseline by the last NK "
                                         f"tube (day {post[-1] if post else 'none'})")
        out[pid] = rec
    return out
