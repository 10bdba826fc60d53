"""NK read-outs of one PB NK tube: NK % of lymphocytes, CD56bright/dim subsets, NKG2A (CD159a).

The tube is gated with the ``pb_nk`` template (``resources/gating/pb_nk.xml`` + ``pb_nk.yaml``):

    TimeOK > Singlets > Cells > Viable > CD45pos > Lymphocytes
        > Tcells > Tcells_NKG2Apos                  (T cells: the internal NKG2A-negative reference)
        > CD3neg_Dumpneg > CD56pos, CD16pos, NK = CD56pos OR CD16pos
            > NK_bright (CD56bright CD16-/dim) > NKG2Apos_bright
            > NK_dim (CD56dim CD16+)           > NKG2Apos_dim
            > NKG2Apos

The NKG2A+ threshold is one value for NK, both subsets (and the T-cell QC gate): the 99.5th
percentile of the FMO control's NK cells when the sample has an FMO tube (CD159a omitted), else the
density valley between NKG2A- and NKG2A+ NK cells searched above the T cells' negative mode
(+3 robust SDs). :func:`nk_metrics` reads the counts, thresholds and intensities off the gated
tube(s); :func:`gate_nk_sample` reads, resolves, compensates and gates the files first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mrdflow.errors import MrdflowError
from mrdflow.gating import GatingTemplate, QCSettings, TubeGating, gate_tube, make_transform, open_tube
from mrdflow.panels import Panel

__all__ = ["NKMetrics", "NKError", "NK_GATES", "FMO_MARKER", "nk_metrics", "gate_nk_sample"]

#: the marker an NK FMO control leaves unstained
FMO_MARKER = "CD159a"
#: gate ids of the pb_nk template that :func:`nk_metrics` reads
NK_GATES = ("Lymphocytes", "Tcells", "Tcells_NKG2Apos", "NK", "NK_bright", "NK_dim",
            "NKG2Apos", "NKG2Apos_bright", "NKG2Apos_dim")
_THRESHOLD_GATE = "NKG2Apos"
_DEFAULT_QC = QCSettings()  # the config's qc defaults (a frozen, shared instance)


class NKError(MrdflowError):
    """A gated tube lacks the NK template's gates, or NK read-outs cannot be computed."""


@dataclass(frozen=True)
class NKMetrics:
    """NK read-outs of one PB NK tube (``None`` where undefined, e.g. a % of zero NK cells).

    Counts are events. Percentages are 0-100.

    lymphocytes: events in the Lymphocytes gate (viable single CD45+ low-SSC cells).
    nk_count / nk_pct_lymph: NK cells (CD3- dump- CD56+ and/or CD16+), % of lymphocytes.
    nk_bright_count / nk_bright_pct_of_nk: CD56bright CD16-/dim NK, % of NK.
    nk_dim_count / nk_dim_pct_of_nk: CD56dim CD16+ NK, % of NK.
    nkg2a_pos_count / nkg2a_pct: NKG2A+ NK, % of NK; nkg2a_pct_bright / nkg2a_pct_dim: NKG2A+ %
    of each subset (same threshold).
    nkg2a_median: median CD159a of all NK cells in compensated channel units (the logicle inverse of
    the median in logicle units; the logicle is monotonic so the two are the same event);
    nkg2a_median_logicle: the same in logicle gate units (0-1).
    nkg2a_median_pos / nkg2a_median_pos_logicle: the same for NKG2A+ NK cells only.
    nkg2a_threshold: the NKG2A+ threshold in logicle units (0-1); nkg2a_threshold_channel: the same
    in compensated channel units (logicle inverse). nkg2a_threshold_source: ``"fmo"`` (FMO control
    quantile), ``"data"`` (valley between NK modes above the T-cell negative) or ``"fixed"``
    (template value, e.g. a FlowJo template); nkg2a_threshold_how: how the gate was placed.
    t_cells / t_cell_nkg2a_pct: T cells (CD3+ lymphocytes) and their NKG2A+ % (QC of the internal
    negative: a few % of T cells carry NKG2A; a large value means the threshold sits too low).
    fmo_nk_count / fmo_nk_above_pct: NK events in the FMO tube and the % above the threshold (QC:
    about 100 - 99.5 = 0.5 % by construction unless the window clipped it); None without an FMO.
    bead_count: counting-bead events (time-QC'd events in the Beads gate; None when the tube's
    template has no Beads gate, e.g. panel ``pb_nk``); beads_per_tube / blood_volume_ul: from the
    sample sheet. cells_per_ul: NK cells per µL of blood = nk_count / bead_count × beads_per_tube
    / blood_volume_ul; cells_per_ul_ci95_low/high: its Poisson 95% interval (bead count taken as
    exact); count_reason: why there is no count ("" when there is one).
    """

    lymphocytes: int
    nk_count: int
    nk_pct_lymph: float | None
    nk_bright_count: int
    nk_bright_pct_of_nk: float | None
    nk_dim_count: int
    nk_dim_pct_of_nk: float | None
    nkg2a_pos_count: int
    nkg2a_pct: float | None
    nkg2a_pct_bright: float | None
    nkg2a_pct_dim: float | None
    nkg2a_median: float | None
    nkg2a_median_logicle: float | None
    nkg2a_median_pos: float | None
    nkg2a_median_pos_logicle: float | None
    nkg2a_threshold: float
    nkg2a_threshold_channel: float
    nkg2a_threshold_source: str
    nkg2a_threshold_how: str
    t_cells: int
    t_cell_nkg2a_pct: float | None
    fmo_nk_count: int | None = None
    fmo_nk_above_pct: float | None = None
    bead_count: int | None = None
    beads_per_tube: float | None = None
    blood_volume_ul: float | None = None
    cells_per_ul: float | None = None
    cells_per_ul_ci95_low: float | None = None
    cells_per_ul_ci95_high: float | None = None
    count_reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


#: The gate of counting beads an NK template may have (panel ``pb_nk_beads``).
BEADS_GATE = "Beads"


def nk_count(stain, beads_per_tube: float | None, blood_volume_ul: float | None) -> dict:
    """NK cells/µL of a gated NK tube from its counting beads (the fields of :class:`NKMetrics`
    from ``bead_count`` on), or, without beads, the reason there is no count."""
    from mrdflow.sample._cart import absolute_count

    out = {"beads_per_tube": beads_per_tube, "blood_volume_ul": blood_volume_ul}
    if BEADS_GATE not in {s.gate_id for s in stain.steps}:
        name = getattr(getattr(getattr(stain.view, "resolved", None), "panel", None), "name", "this panel")
        return {**out, "count_reason": f"no counting beads in the NK tube (panel {name} has no Beads gate): "
                                       "NKG2A % only"}
    beads = stain.count(BEADS_GATE)
    c = absolute_count(stain.count("NK"), beads, beads_per_tube, blood_volume_ul)  # type: ignore[arg-type]
    reason = c.reason
    if reason and (beads_per_tube is None or blood_volume_ul is None):
        reason = "beads_per_tube and blood_volume_ul are not in the sample sheet for this NK tube"
    return {**out, "bead_count": beads, "cells_per_ul": c.cells_per_ul,
            "cells_per_ul_ci95_low": c.ci95[0] if c.ci95 else None,
            "cells_per_ul_ci95_high": c.ci95[1] if c.ci95 else None, "count_reason": reason}


def _pct(num: int, den: int) -> float | None:
    return 100.0 * num / den if den > 0 else None


def _step(stain: TubeGating, gate_id: str):
    for s in stain.steps:
        if s.gate_id == gate_id:
            return s
    raise NKError(f"{stain.view.name}: gated tube has no gate {gate_id!r} (is it gated with the pb_nk template?)")


def _source(note: str) -> str:
    head = note.split(";", 1)[0]
    if head.startswith("FMO ") and "percentile" in head:
        return "fmo"
    if head.startswith("fixed"):
        return "fixed"
    return "data"


def nk_metrics(stain: TubeGating, fmo: TubeGating | None = None, beads_per_tube: float | None = None,
               blood_volume_ul: float | None = None) -> NKMetrics:
    """NK read-outs of a tube gated with the pb_nk (or pb_nk_beads) template.

    ``fmo``: the gated FMO control of the same sample, only for the FMO QC figures (the threshold
    itself was placed by :func:`mrdflow.gating.gate_tube` when ``stain`` was gated with ``fmo=``).
    ``beads_per_tube`` / ``blood_volume_ul``: the sheet's, for NK cells/µL when the template counts
    beads (:func:`nk_count`).
    """
    missing = [g for g in NK_GATES if g not in {s.gate_id for s in stain.steps}]
    if missing:
        raise NKError(f"{stain.view.name}: gated tube lacks NK template gate(s) {missing}")
    c = {g: stain.count(g) for g in NK_GATES}
    step = _step(stain, _THRESHOLD_GATE)
    lo, _ = step.bounds.get(FMO_MARKER, (None, None))
    if lo is None:
        raise NKError(f"{stain.view.name}: gate {_THRESHOLD_GATE!r} has no {FMO_MARKER} lower bound")
    thr = float(lo)
    note = step.how.get(f"{FMO_MARKER}.min", "fixed (template)")
    xf = make_transform(stain.view.transform_specs["fluorescence"])

    def inv(x: float | None) -> float | None:
        if x is None or not math.isfinite(x):
            return None
        return float(np.asarray(xf.inverse(np.array([[x]], dtype=np.float64))).ravel()[0])

    nk = stain.events_in("NK", ("NKG2Apos",))  # every NK event, also of a streamed tube
    nk_vals = nk.values[:, nk.markers.index(FMO_MARKER)]
    pos_vals = nk_vals[nk.flags["NKG2Apos"]]  # NKG2Apos lies inside NK
    med = float(np.median(nk_vals)) if nk_vals.size else None
    med_pos = float(np.median(pos_vals)) if pos_vals.size else None

    fmo_n = fmo_above = None
    if fmo is not None and "NK" in {s.gate_id for s in fmo.steps}:
        fv = fmo.view.values(FMO_MARKER)[fmo.mask("NK")]
        fmo_n = int(fv.size)
        fmo_above = _pct(int(np.count_nonzero(fv >= thr)), fmo_n)

    return NKMetrics(
        lymphocytes=c["Lymphocytes"],
        nk_count=c["NK"],
        nk_pct_lymph=_pct(c["NK"], c["Lymphocytes"]),
        nk_bright_count=c["NK_bright"],
        nk_bright_pct_of_nk=_pct(c["NK_bright"], c["NK"]),
        nk_dim_count=c["NK_dim"],
        nk_dim_pct_of_nk=_pct(c["NK_dim"], c["NK"]),
        nkg2a_pos_count=c["NKG2Apos"],
        nkg2a_pct=_pct(c["NKG2Apos"], c["NK"]),
        nkg2a_pct_bright=_pct(c["NKG2Apos_bright"], c["NK_bright"]),
        nkg2a_pct_dim=_pct(c["NKG2Apos_dim"], c["NK_dim"]),
        nkg2a_median=inv(med),
        nkg2a_median_logicle=med,
        nkg2a_median_pos=inv(med_pos),
        nkg2a_median_pos_logicle=med_pos,
        nkg2a_threshold=thr,
        nkg2a_threshold_channel=inv(thr),
        nkg2a_threshold_source=_source(note),
        nkg2a_threshold_how=note,
        t_cells=c["Tcells"],
        t_cell_nkg2a_pct=_pct(c["Tcells_NKG2Apos"], c["Tcells"]),
        fmo_nk_count=fmo_n,
        fmo_nk_above_pct=fmo_above,
        **nk_count(stain, beads_per_tube, blood_volume_ul),
    )


def gate_nk_sample(stain_fcs_path: str | Path, fmo_fcs_path: str | Path | None, panel: Panel,
                   template: GatingTemplate, transforms: Mapping[str, Mapping],
                   qc_settings: QCSettings = _DEFAULT_QC, *, compensation: str = "fcs",
                   workdir: str | Path = ".") -> tuple[TubeGating, TubeGating | None, NKMetrics]:
    """Read, gate and measure one PB NK sample: the FMO tube (``CD159a`` unstained) first, then
    the stained tube with the FMO's NK gate placing the NKG2A threshold.

    ``transforms``: ``{"fluorescence": {...}, "scatter": {...}}`` (config ``transforms``);
    ``compensation``: ``"fcs"`` (the file's $SPILLOVER), ``"none"`` or a matrix file.
    """
    fmo = None
    if fmo_fcs_path is not None:
        fview = open_tube(fmo_fcs_path, panel, transforms, compensation=compensation, unstained={FMO_MARKER},
                          workdir=workdir).view()
        fmo = gate_tube(template, fview, qc_settings=qc_settings)
    sview = open_tube(stain_fcs_path, panel, transforms, compensation=compensation, workdir=workdir).view()
    stain = gate_tube(template, sview, qc_settings=qc_settings, fmo=fmo)
    return stain, fmo, nk_metrics(stain, fmo)
