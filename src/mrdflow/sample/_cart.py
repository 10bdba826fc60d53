"""CAR-T read-outs of one PB tube: CAR+ % of CD3+ and absolute CAR-T cells/µL from counting beads.

The tube is gated with the ``pb_cart`` template (``resources/gating/pb_cart.xml`` + ``pb_cart.yaml``):

    TimeOK > Beads                                   (counting beads: not cells, no singlet logic)
    TimeOK > Singlets > Cells > Viable > CD45pos > Lymphocytes > CD3pos > CARpos > CAR_CD4, CAR_CD8

Beads and CAR-T cells are both counted on the time-QC'd events, so a dropped time segment removes
both in proportion and the ratio stays unbiased. Absolute count (cells/µL) = CAR+ events / bead
events × beads per tube / blood volume (µL). :func:`cart_metrics` reads counts and the CAR threshold
off a gated tube; :func:`gate_cart_tube` reads, resolves, compensates and gates the file first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from mrdflow.errors import MrdflowError

__all__ = ["AbsoluteCount", "absolute_count", "CARTError", "CARTMetrics", "CART_GATES",
           "cart_metrics", "gate_cart_tube"]

#: gate ids of the pb_cart template that :func:`cart_metrics` reads
CART_GATES = ("Beads", "Lymphocytes", "CD3pos", "CARpos", "CAR_CD4", "CAR_CD8")
_CAR_GATE = "CARpos"
_CAR_MARKER = "CAR"


class CARTError(MrdflowError):
    """A gated tube lacks the CAR-T template's gates, or CAR-T read-outs cannot be computed."""


@dataclass(frozen=True)
class AbsoluteCount:
    """cells_per_ul: CAR-T cells per µL of blood (None when it cannot be computed, with ``reason``).
    ci95: Poisson 95% interval on cells/µL from the CAR+ event count (bead count taken as exact)."""

    cells_per_ul: float | None
    car_events: int
    bead_events: int
    beads_per_tube: float
    blood_volume_ul: float
    ci95: tuple[float, float] | None
    reason: str = ""


def absolute_count(car_events: int, bead_events: int, beads_per_tube: float, blood_volume_ul: float) -> AbsoluteCount:
    """cells/µL = CAR+ events / bead events × beads per tube / blood volume (µL)."""
    # Garwood's exact Poisson interval: chi2.ppf(q, 2k) / 2 is the inverse regularised lower
    # incomplete gamma function at (k, q); scipy.special has it without scipy.stats' import (~0.6 s)
    from scipy.special import gammaincinv

    if beads_per_tube is None or blood_volume_ul is None or beads_per_tube <= 0 or blood_volume_ul <= 0:
        return AbsoluteCount(None, car_events, bead_events, beads_per_tube or 0.0, blood_volume_ul or 0.0, None,
                             "beads_per_tube and blood_volume_ul must be positive")
    if bead_events <= 0:
        return AbsoluteCount(None, car_events, bead_events, beads_per_tube, blood_volume_ul, None,
                             "no bead events found")
    factor = beads_per_tube / bead_events / blood_volume_ul
    lo = 0.0 if car_events == 0 else float(gammaincinv(car_events, 0.025))
    hi = float(gammaincinv(car_events + 1, 0.975))
    return AbsoluteCount(car_events * factor, car_events, bead_events, beads_per_tube, blood_volume_ul,
                         (lo * factor, hi * factor))


@dataclass(frozen=True)
class CARTMetrics:
    """CAR-T read-outs of one PB CAR-T tube (``None`` where undefined).

    Counts are events (after time QC); percentages are 0-100; concentrations are cells per µL of
    blood.

    cd3_count: CD3+ T cells (viable single CD45+ lymphocytes, CAR+ and CAR-), events.
    car_count: CAR+ CD3+ T cells (CAR-T cells), events.
    car_pct_cd3: CAR+ % of CD3+ (%).
    bead_count: counting-bead events (time-QC'd events in the Beads gate).
    beads_per_tube: beads added to the tube (from the sample sheet); blood_volume_ul: blood stained (µL).
    cells_per_ul: CAR-T cells/µL = car_count / bead_count × beads_per_tube / blood_volume_ul;
    cells_per_ul_ci95: its Poisson 95% interval (cells/µL; bead count taken as exact).
    cd3_per_ul: CD3+ T cells/µL (same bead factor).
    reason: why cells_per_ul is None (no beads, missing tube volume/beads); "" otherwise.
    car_cd4_count / car_cd8_count: CAR+ CD4+ / CAR+ CD8+ events; car_cd4_pct / car_cd8_pct: % of CAR+.
    car_threshold: the CAR+ threshold in logicle gate units (0-1).
    car_threshold_source: how it was placed: ``"valley"`` (density valley between the CAR- and CAR+
    T-cell modes), ``"gap"`` (no CAR+ mode: the density minimum inside the search window, so the
    gate stays nearly empty), ``"fallback"`` (the window held no events), ``"fixed"`` (template value);
    car_threshold_how: the placement note of the gate.
    time_qc_failed: the tube's time/flow-rate QC removed more than the allowed fraction.
    """

    cd3_count: int
    car_count: int
    car_pct_cd3: float | None
    bead_count: int
    beads_per_tube: float | None
    blood_volume_ul: float | None
    cells_per_ul: float | None
    cells_per_ul_ci95: tuple[float, float] | None
    cd3_per_ul: float | None
    reason: str
    car_cd4_count: int
    car_cd8_count: int
    car_cd4_pct: float | None
    car_cd8_pct: float | None
    car_threshold: float | None
    car_threshold_source: str
    car_threshold_how: str
    time_qc_failed: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        ci = d.pop("cells_per_ul_ci95")
        d["cells_per_ul_ci95_low"] = ci[0] if ci else None
        d["cells_per_ul_ci95_high"] = ci[1] if ci else None
        return d


def _pct(num: int, den: int) -> float | None:
    return 100.0 * num / den if den > 0 else None


def _threshold_source(note: str) -> str:
    head = note.split(";", 1)[0].strip()
    for key, src in (("valley", "valley"), ("minimum", "gap"), ("fallback", "fallback"), ("fixed", "fixed")):
        if head.startswith(key):
            return src
    return "data"


def cart_metrics(g, beads_per_tube: float | None, blood_volume_ul: float | None) -> CARTMetrics:
    """CAR-T read-outs of a tube gated with the pb_cart template (``g``: a
    :class:`mrdflow.gating.TubeGating`). ``beads_per_tube`` / ``blood_volume_ul``: from the sample
    sheet; when missing or non-positive, or when no bead was found, ``cells_per_ul`` is None and
    ``reason`` says why (the event counts and percentages are still reported)."""
    have = {s.gate_id for s in g.steps}
    missing = [gid for gid in CART_GATES if gid not in have]
    if missing:
        raise CARTError(f"{g.view.name}: gated tube lacks CAR-T template gate(s) {missing} "
                        "(is it gated with the pb_cart template?)")
    c = {gid: g.count(gid) for gid in CART_GATES}
    step = next(s for s in g.steps if s.gate_id == _CAR_GATE)
    lo, _ = step.bounds.get(_CAR_MARKER, (None, None))
    note = step.how.get(f"{_CAR_MARKER}.min", "fixed (template)")
    bpt = float(beads_per_tube) if beads_per_tube is not None else None
    vol = float(blood_volume_ul) if blood_volume_ul is not None else None
    car = absolute_count(c["CARpos"], c["Beads"], bpt, vol)  # type: ignore[arg-type]
    cd3 = absolute_count(c["CD3pos"], c["Beads"], bpt, vol)  # type: ignore[arg-type]
    return CARTMetrics(
        cd3_count=c["CD3pos"],
        car_count=c["CARpos"],
        car_pct_cd3=_pct(c["CARpos"], c["CD3pos"]),
        bead_count=c["Beads"],
        beads_per_tube=bpt,
        blood_volume_ul=vol,
        cells_per_ul=car.cells_per_ul,
        cells_per_ul_ci95=car.ci95,
        cd3_per_ul=cd3.cells_per_ul,
        reason=car.reason,
        car_cd4_count=c["CAR_CD4"],
        car_cd8_count=c["CAR_CD8"],
        car_cd4_pct=_pct(c["CAR_CD4"], c["CARpos"]),
        car_cd8_pct=_pct(c["CAR_CD8"], c["CARpos"]),
        car_threshold=float(lo) if lo is not None else None,
        car_threshold_source=_threshold_source(note),
        car_threshold_how=note,
        time_qc_failed=bool(g.qc.get("time", {}).get("failed", False)),
    )


def gate_cart_tube(fcs_path: str | Path, panel, template, transforms: Mapping[str, Mapping],
                   qc_settings=None, beads_per_tube: float | None = None,
                   blood_volume_ul: float | None = None, *, compensation: str = "fcs",
                   workdir: str | Path = "."):
    """Read, gate and measure one PB CAR-T tube; returns ``(TubeGating, CARTMetrics)``.

    ``panel``: the pb_cart :class:`mrdflow.panels.Panel`; ``template``: the pb_cart
    :class:`mrdflow.gating.GatingTemplate`; ``transforms``: ``{"fluorescence": {...}, "scatter":
    {...}}`` (config ``transforms``); ``qc_settings``: :class:`mrdflow.gating.QCSettings` (default when
    None); ``compensation``: ``"fcs"`` (the file's $SPILLOVER), ``"none"`` or a matrix file.
    """
    from mrdflow.gating import QCSettings, gate_tube, open_tube

    view = open_tube(fcs_path, panel, transforms, compensation=compensation, workdir=workdir).view()
    g = gate_tube(template, view, qc_settings=qc_settings if qc_settings is not None else QCSettings())
    return g, cart_metrics(g, beads_per_tube, blood_volume_ul)
