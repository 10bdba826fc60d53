"""Simulated populations and their phenotypes: the cell populations of each tube kind (bone marrow,
PB NK, PB CAR-T), scatter and marker expression per population, and the aberrant plasma-cell
phenotype a design plants. Intensities are linear fluorescence units before spillover and noise;
scatter in channel units."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        "nk_dim_nkg2a_neg", "bead",  # bead last: NK tubes without beads keep their label ids
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
_KIND = {"ngf_tube1": "bm", "ngf_tube2": "bm", "pb_nk": "nk", "pb_nk_beads": "nk", "pb_cart": "cart"}

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
    # CD38 is bright on every plasma cell (pc_aberrant's own level, used when a design sets no
    # CD38); "dim" is the clone after anti-CD38 antibodies: its median sits at the upper edge of
    # the CD38-negative populations (neutrophils 350 and erythroblasts 600 with sd 0.3 decades:
    # their 99th percentiles plus autofluorescence reach ~2000-3000), below monocytes and NK cells.
    "CD38": {"neg": None, "dim": (2500, 0.2), "pos": (50000, 0.2)},
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
# Counting beads of an NK tube (panel pb_nk_beads): brightest on their own channel (APC, Beads),
# dimmer on the others, as in the CAR-T tube.
_NK["bead"] = _p((30000, 0.04), (45000, 0.05), 0.0, Beads=(150000, 0.03), CD3=(8000, 0.04),
                 CD45=(3000, 0.05), Viability=(4000, 0.05), CD159a=(5000, 0.04), Dump=(6000, 0.04),
                 CD56=(4000, 0.04), CD16=(5000, 0.04))

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

#: Counting beads with no channel of their own (a design's ``cart_tube: {bead_channel: none}``):
#: CountBright-like, as bright on every fluorescence channel as the beads are on their own channel
#: (median 1.5x10^5 channel units, ~0.95 logicle on the bd scale, where the brightest stain, CD8 on
#: CD8 T cells, has its median at 2x10^4 and four SDs above it ~1.1x10^5) and tight (0.017
#: decades: CV ~4%). Their scatter is that of the beads with a channel of their own.
SHARED_CHANNEL_BEAD = (150_000, 0.017)


def _specs_for(kind: str, p: Mapping, tube: str, bead_markers: Sequence[str] = (),
               shifts: Mapping[str, float] | None = None) -> dict:
    """The phenotypes of a tube's populations. ``bead_markers``: the markers counting beads are
    read on when they have no channel of their own (each at :data:`SHARED_CHANNEL_BEAD`);
    ``shifts``: the instrument's per-marker shifts (decades), undone for those beads: they carry
    their own dyes, not the lab's conjugates the shifts stand for."""
    specs = dict(PHENOTYPES[kind])
    if bead_markers:
        bead = specs["bead"]
        level, sd = SHARED_CHANNEL_BEAD
        specs["bead"] = _p(bead["fsc"], bead["ssc"], 0.0,
                           **{m: (level / 10 ** (shifts or {}).get(m, 0.0), sd) for m in bead_markers})
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

