"""Biology profiles of the simulator: defaults for the planted biology that a design's patients
do not set themselves.

``default`` is today's biology (nothing is filled in). ``anti_cd38`` is a relapsed/refractory
myeloma cohort after anti-CD38 antibodies: the clone is CD38-dim (median at the upper edge of
the CD38-negative populations, as when the therapeutic antibody masks the epitope), CD56-negative
and CD45-positive; the baseline marrow holds 40-60% plasma cells; NK cells, which carry CD38 and
are depleted by the antibody, are few.

Knobs (``biology:`` at the top of a design for the whole cohort, or in a patient for one patient;
either a profile name or a mapping with ``profile`` and any of the knobs, the patient's over the
cohort's, a patient's own values over both):

* ``aberrant_phenotype``: neg|dim|pos per marker (CD38 too), under the patient's own phenotype;
* ``baseline_pc_pct``: baseline plasma cells, % of nucleated cells, when the patient's
  ``bm_baseline`` has no ``pc_pct``: a number, or ``[low, high]`` for a value drawn per patient
  (uniform, seeded by the design seed and the patient id, rounded to 0.1);
* ``nk_pct_lymph``: NK cells, % of lymphocytes in the PB NK tube, when the patient's ``nk`` has none;
* ``nk_factor``: a factor on NK cells in the marrow and in the host's blood (CAR-T tubes); where a
  design counts NK cells (``nk_tube``) the blood's NK cells follow the patient's NK curve instead
  (:func:`mrdflow.demo._planted.nk_baseline_per_ul`: from ``nk_pct_lymph``, which the biology
  already lowers), in the CAR-T tubes too.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

BIOLOGIES: dict[str, dict[str, Any]] = {
    "default": {},
    "anti_cd38": {
        "aberrant_phenotype": {"CD38": "dim", "CD56": "neg", "CD45": "pos"},
        "baseline_pc_pct": [40.0, 60.0],
        "nk_pct_lymph": 3.0,  # healthy adults: ~5-20%; after daratumumab often below 5%
        "nk_factor": 0.25,
    },
}
KNOBS = ("aberrant_phenotype", "baseline_pc_pct", "nk_pct_lymph", "nk_factor")


def _spec(value: Any, where: str) -> dict[str, Any]:
    """A ``biology:`` entry as a mapping: the profile's knobs under the entry's own."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"profile": value}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: biology must be a profile name or a mapping")
    value = dict(value)
    name = value.pop("profile", None)
    unknown = set(value) - set(KNOBS)
    if unknown:
        raise ValueError(f"{where}: unknown biology knob(s) {sorted(unknown)} (known: {list(KNOBS)})")
    if name is not None and name not in BIOLOGIES:
        raise ValueError(f"{where}: biology profile {name!r} is not one of {list(BIOLOGIES)}")
    out = dict(BIOLOGIES[name]) if name is not None else {}
    if name is not None:
        out["profile"] = name
    out.update(value)
    return out


def biology_for(design: Mapping, p: Mapping, pid: str = "") -> dict[str, Any]:
    """The biology knobs of one patient (the cohort's ``biology:`` under the patient's), with
    ``profile`` naming the profile in force; empty for today's biology."""
    cohort = _spec(design.get("biology"), "design")
    own = _spec(p.get("biology"), f"patient {pid}")
    if "profile" in own:  # a patient's profile replaces the cohort's, knob by knob
        cohort = {k: v for k, v in cohort.items() if k not in own}
    bio = {**cohort, **own}
    if bio.get("profile") == "default" and len(bio) == 1:
        return {}
    return bio


def _pc_pct(value: Any, seed: int, pid: str) -> float:
    if isinstance(value, (list, tuple)):
        lo, hi = float(value[0]), float(value[1])
        rng = np.random.default_rng([int(seed), zlib.crc32(pid.encode())])
        return round(float(rng.uniform(lo, hi)), 1)
    return float(value)


def effective_patient(design: Mapping, pid: str, p: Mapping) -> Mapping:
    """The patient as the simulator plants it: ``p`` itself under today's biology, else a copy
    with the biology's defaults filled in where the patient sets nothing (a ``biology`` entry
    holds the knobs in force)."""
    bio = biology_for(design, p, pid)
    if not bio:
        return p
    out: dict[str, Any] = dict(p)
    if "aberrant_phenotype" in bio:
        out["aberrant_phenotype"] = {**bio["aberrant_phenotype"], **(p.get("aberrant_phenotype") or {})}
    if "baseline_pc_pct" in bio and "pc_pct" not in (p.get("bm_baseline") or {}):
        pct = _pc_pct(bio["baseline_pc_pct"], int(design.get("seed", 596)), pid)
        out["bm_baseline"] = {**(p.get("bm_baseline") or {}), "pc_pct": pct}
    if "nk_pct_lymph" in bio and "nk" in p and "nk_pct_lymph" not in p["nk"]:
        out["nk"] = {**p["nk"], "nk_pct_lymph": float(bio["nk_pct_lymph"])}
    if "nk_factor" in bio and "nk_factor" not in p:
        out["nk_factor"] = float(bio["nk_factor"])
    out["biology"] = {k: v for k, v in bio.items()}
    return out
