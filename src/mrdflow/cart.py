"""CAR-T read-outs of one PB tube: CAR+ % of CD3+ and absolute CAR-T cells/µL from counting beads."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AbsoluteCount", "absolute_count"]


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
    from scipy.stats import chi2

    if beads_per_tube is None or blood_volume_ul is None or beads_per_tube <= 0 or blood_volume_ul <= 0:
        return AbsoluteCount(None, car_events, bead_events, beads_per_tube or 0.0, blood_volume_ul or 0.0, None,
                             "beads_per_tube and blood_volume_ul must be positive")
    if bead_events <= 0:
        return AbsoluteCount(None, car_events, bead_events, beads_per_tube, blood_volume_ul, None, "no bead events found")
    factor = beads_per_tube / bead_events / blood_volume_ul
    lo = 0.0 if car_events == 0 else chi2.ppf(0.025, 2 * car_events) / 2
    hi = chi2.ppf(0.975, 2 * (car_events + 1)) / 2
    return AbsoluteCount(car_events * factor, car_events, bead_events, beads_per_tube, blood_volume_ul, (lo * factor, hi * factor))
