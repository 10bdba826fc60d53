"""Where a marker's populations sit in a lab's own files: the density modes of pooled gate-unit
values, the negative and positive populations among them, and for scatter the main population.

Pure functions of arrays: no file is read here. The density is a weighted histogram smoothed with a
Gaussian kernel of a fixed width (the same on every instrument, so positions found on two
instruments compare), the populations its peaks that are both prominent and hold a share of the
events. The constants are statements about densities of a few thousand events or more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MarkerModes", "Population", "locate_main", "locate_modes", "populations"]

#: Axis of the density (gate units): a little beyond [0, 1] so that a population on an edge
#: (logicle values below 0, scatter near its top) still has a peak.
AXIS = (-0.1, 1.1)
BINS = 600
#: Kernel width (gate units, about 0.07 decades of a 4.5-decade logicle): narrower than the gap
#: between a negative and a dim population (0.2 or more), wide enough that the compensation
#: spread of a negative population (a shoulder of bumps at bandwidths of 0.01) is one peak.
BANDWIDTH = 0.015
#: A peak is a population when its prominence is at least 3% of the tallest peak and its basin
#: (the events between the density minima to its neighbours) holds at least 1% of the events:
#: a population of 1% of a few thousand events is tens of events per bin at its peak, above the
#: bin-to-bin noise of the smoothed histogram.
MIN_PROMINENCE = 0.03
MIN_SHARE = 0.01
#: A positive population is clearly separated from the negative one when it lies at least 0.12
#: gate units (about half a decade) above it with a valley between them no higher than half the
#: lower of the two peaks (each population's bulk then lies on its own side of the valley).
MIN_SEPARATION = 0.12
DEEP_VALLEY = 0.5
#: A found population matches an expected position when within 0.15 gate units of it (about 0.7
#: decades of a logicle axis): another instrument moves populations a few tenths of a decade; a
#: population further away is another population.
TOLERANCE = 0.15
#: Fewer pooled events than this give no density to find populations in.
MIN_EVENTS = 200


@dataclass(frozen=True)
class Population:
    """One population on an axis: ``position`` (its density mode, gate units), ``share`` (the
    fraction of the events in its basin), ``prominence`` (peak above the higher of its two
    bases, as a fraction of the tallest peak) and ``height`` (its density)."""

    position: float
    share: float
    prominence: float
    height: float


@dataclass(frozen=True)
class MarkerModes:
    """The populations found on one axis and the ones chosen: ``negative`` and ``positive`` (a
    fluorescence marker) or ``main`` (a scatter dimension); each None when not found, with the
    reason in ``negative_reason`` / ``positive_reason``. ``events``: the number of values pooled."""

    events: int
    populations: tuple[Population, ...] = ()
    negative: Population | None = None
    positive: Population | None = None
    main: Population | None = None
    negative_reason: str = ""
    positive_reason: str = ""

    def listing(self) -> str:
        """``0.12 (62%), 0.71 (30%)``: every population found."""
        return ", ".join(f"{p.position:.2f} ({100 * p.share:.0f}%)" for p in self.populations) or "none"


def _density(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, smoothed density) of the weighted values on :data:`AXIS`."""
    from scipy.ndimage import gaussian_filter1d

    edges = np.linspace(AXIS[0], AXIS[1], BINS + 1)
    counts, _ = np.histogram(values, bins=edges, weights=weights)
    step = edges[1] - edges[0]
    y = gaussian_filter1d(counts.astype(np.float64), BANDWIDTH / step, mode="constant")
    total = y.sum() * step
    return 0.5 * (edges[:-1] + edges[1:]), (y / total if total > 0 else y)


def _clean(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != v.shape:
        raise ValueError(f"{w.size} weights for {v.size} values")
    keep = np.isfinite(v) & np.isfinite(w) & (w > 0)
    return v[keep], w[keep]


def populations(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[Population, ...]:
    """The populations on the axis, ascending: density peaks of prominence at least
    :data:`MIN_PROMINENCE` of the tallest whose basin holds at least :data:`MIN_SHARE` of the
    (weighted) events. ``weights``: per value (e.g. 1 / events of its file, so that each file
    counts the same)."""
    from scipy.signal import find_peaks

    v, w = _clean(values, weights)
    if v.size < MIN_EVENTS:
        return ()
    x, y = _density(v, w)
    top = float(y.max())
    if top <= 0:
        return ()
    idx, props = find_peaks(np.concatenate([[0.0], y, [0.0]]), prominence=MIN_PROMINENCE * top)
    idx = idx - 1
    if not idx.size:
        return ()
    cuts = [float(x[a + int(np.argmin(y[a:b + 1]))]) for a, b in zip(idx[:-1], idx[1:])]
    edges = np.array([-np.inf, *cuts, np.inf])
    total = float(w.sum())
    shares = [float(w[(v >= lo) & (v < hi)].sum()) / total for lo, hi in zip(edges[:-1], edges[1:])]
    out = [Population(float(x[i]), s, float(p) / top, float(y[i]))
           for i, s, p in zip(idx, shares, props["prominences"]) if s >= MIN_SHARE]
    return tuple(out)


def _valley_depth(values: np.ndarray, weights: np.ndarray, a: Population, b: Population) -> float:
    """1 - the density minimum between populations ``a`` < ``b`` / the lower of their peaks."""
    x, y = _density(values, weights)
    sel = (x > a.position) & (x < b.position)
    low = min(a.height, b.height)
    if not sel.any() or low <= 0:
        return 0.0
    return float(np.clip(1.0 - y[sel].min() / low, 0.0, 1.0))


def _nearest(pops: list[Population], expected: float, tolerance: float) -> Population | None:
    near = [p for p in pops if abs(p.position - expected) <= tolerance]
    return min(near, key=lambda p: (abs(p.position - expected), p.position)) if near else None


def locate_modes(values: np.ndarray, weights: np.ndarray | None = None, *, expected_negative: float | None = None,
                 expected_positive: float | None = None, tolerance: float = TOLERANCE) -> MarkerModes:
    """The negative and positive populations of a fluorescence marker from pooled gate-unit values.

    Negative: the lowest population (:func:`populations`). Positive: the brightest population
    clearly separated from it (at least :data:`MIN_SEPARATION` above it, a valley at most half the
    lower peak between them). With expected positions (the template's, see ``expected:`` in
    ``resources/gating/<panel>.yaml``) each is instead the population nearest its expected
    position within ``tolerance`` (a marker with a dim and a bright population, e.g. CD56dim and
    CD56bright NK cells, is then matched to the one the template's windows were written for).
    A population not found is None, with the reason (e.g. no positive population at all: a
    panel's files hold no CD138+ cells when they are MRD-negative marrows).
    """
    v, w = _clean(values, weights)
    pops = list(populations(v, w))
    if not pops:
        reason = f"too few events ({v.size} < {MIN_EVENTS})" if v.size < MIN_EVENTS else "no population found"
        return MarkerModes(int(v.size), (), negative_reason=reason, positive_reason=reason)
    found = ", ".join(f"{p.position:.2f}" for p in pops)
    if expected_negative is None:
        neg = pops[0]
    else:
        neg = _nearest(pops, expected_negative, tolerance)
        if neg is None:
            why = (f"no population within {tolerance:.2f} of the expected negative {expected_negative:.2f} "
                   f"(populations at {found})")
            return MarkerModes(int(v.size), tuple(pops), negative_reason=why,
                               positive_reason="no negative population to measure it from")
    above = [p for p in pops if p.position >= neg.position + MIN_SEPARATION]
    separated = [p for p in above if _valley_depth(v, w, neg, p) >= DEEP_VALLEY]
    pos, why = None, ""
    if not above:
        why = (f"no population at least {MIN_SEPARATION:.2f} above the negative one ({neg.position:.2f}; "
               f"populations at {found}): these files hold no positive cells")
    elif not separated:
        why = (f"no population above the negative one ({neg.position:.2f}) with a valley between them "
               f"(populations at {found})")
    elif expected_positive is None:
        pos = separated[-1]
    else:
        pos = _nearest(separated, expected_positive, tolerance)
        if pos is None:
            why = (f"no separated population within {tolerance:.2f} of the expected positive "
                   f"{expected_positive:.2f} (populations at {found})")
    return MarkerModes(int(v.size), tuple(pops), negative=neg, positive=pos, positive_reason=why)


def locate_main(values: np.ndarray, weights: np.ndarray | None = None) -> MarkerModes:
    """The main population of a scatter dimension: the population with the largest share."""
    v, w = _clean(values, weights)
    pops = populations(v, w)
    if not pops:
        reason = f"too few events ({v.size} < {MIN_EVENTS})" if v.size < MIN_EVENTS else "no population found"
        return MarkerModes(int(v.size), (), negative_reason=reason)
    return MarkerModes(int(v.size), pops, main=max(pops, key=lambda p: p.share))
