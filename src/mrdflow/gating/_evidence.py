"""How sure a placed bound is: its evidence, the checks that call it uncertain, and the fallback
that finds the populations first.

A search window in ``<panel>.yaml`` says where the gap between two populations sat on the
instrument the template was written for. On another instrument, or with shifted biology (CD38-dim
plasma cells after anti-CD38 therapy), the populations move and a search confined to the window
can return a number that looks like any other. :func:`assess` measures each placed bound against
the density of the events it was placed on (:class:`BoundEvidence`), and names what is wrong:

(a) the bound sits on an edge of its window while the density there is not negligible and still
    falls beyond the edge: the valley the search wanted lies outside the window;
(b) the density at the cut is more than half the parent's peak on that axis: the cut runs through
    a population, not between two;
(c) a valley bound with no population on the gate's side of the cut while the part of its window
    the gate leaves out (where the template expects the gap between two populations) holds events
    denser than half the parent's peak, and the cut pinned on the window's far edge: the population
    the gate should hold is missing where the template expects it, and sits in the gap instead. (A population
    merely absent, e.g. no CAR+ cells at day 0 or no CD45- events among leucocytes, leaves the
    window sparse: the gate is then empty or whole by design, and sure.)

A valley bound found uncertain is placed again by :func:`populations_valley`: the modes of the
density over the whole axis first, then the deepest valley between two adjacent populations,
choosing, among those valleys, the one nearest the template's window (the window is then a prior,
not the place the answer must lie).

The constants are statements about densities, not about where the simulator puts populations;
each carries its reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mrdflow.gating._density import Density, density, find_peaks, valley_between

__all__ = [
    "RARE_EVENTS",
    "BoundEvidence",
    "above_negative_cut",
    "assess",
    "brightest_valley",
    "missed_population",
    "negative_mode",
    "populations_valley",
    "tail_evidence",
]

#: A bound within this fraction of its window's width from an edge is "on the edge": the valley
#: search clamps to the window, so a value pinned within 2% of the width of an edge (a grid step
#: or two of the density) is what a search that did not find its valley returns.
EDGE_FRACTION = 0.02
#: A cut where the density is above half the parent's peak on that axis runs through a
#: population: between two populations the density falls well below the smaller one's peak, and
#: at half of the tallest peak the cut is inside the bulk of a population (beyond a Gaussian's
#: half-maximum width is where its events thin out).
DENSE_FRACTION = 0.5
#: Density below 1% of the parent's peak is an empty gap: moving a cut anywhere inside such a
#: gap moves few events, so a bound on a window edge there is as good as any other place in it.
EMPTY_FRACTION = 0.01
#: A density mode counts as a population when its prominence is at least 5% of the tallest peak:
#: smaller bumps are within the sampling noise of a smoothed histogram of a few hundred events
#: (the relative noise of a bin of n events is 1/sqrt(n)).
MODE_PROMINENCE = 0.05
#: A valley is deep when the density at its floor is at most half the lower of its two flanking
#: peaks (depth >= 0.5): the two populations are then separated by more than their half-widths,
#: so the cut leaves each population's bulk on its own side.
DEEP_VALLEY = 0.5
#: Where a population ends below: the highest empty stretch wider than 2 robust SDs of its lower
#: half between its sorted events. Inside a population, and along a tail still attached to it
#: (beads dimmed by a partial clog), consecutive events lie much closer: the widest spacing, between
#: the two most extreme events of a Gaussian sample of n, averages SD / sqrt(2 ln n) (a quarter SD
#: for 3000 events) and exceeds 2 SD with a probability of about exp(-2 sqrt(2 ln n)) (3 in 10,000
#: for 3000 events).
EDGE_GAP_SDS = 2.0
#: Fewer events than this on an axis give no density to judge by (a 1-D density of under 50
#: events has no resolvable modes at all); the bound is then judged by its window only.
MIN_EVENTS = 50
#: A cluster of this many events is a population a flow MRD assay calls (EuroFlow NGF's limit of
#: detection is 20 events). Candidates of the kept kind that a cut leaves out, or unlike ones it
#: takes in, make the cut unsure from this many on, however rare they are in the parent.
RARE_EVENTS = 20
#: A tail cut (a population's mode + k robust SDs) lies past the population when the density there
#: is at most 5% of the population's peak: a Gaussian falls to 5% of its peak 2.45 SDs from its
#: mode, so a cut where more remains is still in the population's shoulder, not beyond it.
TAIL_FRACTION = 0.05
#: A population's two sides mirror each other: between its mode and a tail cut at mode + d there
#: are about as many events as between mode - d and its mode. Half as many again (with at least
#: :data:`RARE_EVENTS` more) is another population merging into its upper side, unresolved as a
#: peak of its own, that the cut would count as this one (skew alone stays below that: a
#: log-normal's upper side within 3 SDs holds 1.15 times its lower side's events at a CV of 10%,
#: 1.29 at 20%).
TAIL_SYMMETRY = 1.5


@dataclass(frozen=True)
class BoundEvidence:
    """What placed one bound and how sure it is (gate units throughout).

    method: the bound method (``valley``, ``tail``, ``gmm``, ``fmo``, ``fixed``). value: the
    bound. window: its search window (lo, hi). edge_distance: the value's distance to the nearest
    window edge. valley_depth: 1 - density at the cut / the lower of the two flanking peaks'
    densities, in [0, 1] (None when the cut does not lie between two populations).
    prominence: the lower flanking peak minus the density at the cut, as a fraction of the
    parent's peak (None when not a valley). density_ratio: the density at the cut / the parent's
    peak density on that axis (the events the bound was placed on). fallback: what was tried
    instead and why (None: the primary placement stood). sure: no check found a problem (or the
    fallback resolved it). reason: why not sure (None when sure).
    """

    method: str
    value: float
    window: tuple[float, float]
    edge_distance: float
    valley_depth: float | None = None
    prominence: float | None = None
    density_ratio: float | None = None
    fallback: str | None = None
    sure: bool = True
    reason: str | None = None

    def as_dict(self) -> dict:
        """A JSON-serialisable dict (the window as a list)."""
        d = asdict(self)
        d["window"] = [float(self.window[0]), float(self.window[1])]
        return d


def fixed_evidence(value: float) -> BoundEvidence:
    """The evidence of a template value: sure by definition (nothing was placed)."""
    return BoundEvidence("fixed", float(value), (float(value), float(value)), 0.0)


def _axis_density(values: np.ndarray, window: tuple[float, float]) -> Density:
    """The density over the whole axis the events span (gate units), the window included."""
    v = values[np.isfinite(values)]
    lo = min(float(np.min(v)) if v.size else window[0], window[0], 0.0)
    hi = max(float(np.max(v)) if v.size else window[1], window[1], 1.0)
    return density(v, lo - 0.05, hi + 0.05)


def _modes(d: Density) -> np.ndarray:
    """Positions of the populations (density modes of prominence >= MODE_PROMINENCE), ascending."""
    top = float(d.y.max())
    if top <= 0:
        return np.array([])
    idx = find_peaks(np.concatenate([[0.0], d.y, [0.0]]), prominence=MODE_PROMINENCE * top)
    return np.sort(d.x[idx - 1])


def _at(d: Density, x: float) -> float:
    return float(np.interp(x, d.x, d.y))


def _valley_shape(d: Density, modes: np.ndarray, value: float) -> tuple[float | None, float | None]:
    """(valley_depth, prominence) of a cut at ``value`` between the tallest population on each
    side; (None, None) when one side has none."""
    left, right = modes[modes < value], modes[modes > value]
    if not left.size or not right.size:
        return None, None
    hl = max(_at(d, x) for x in left)
    hr = max(_at(d, x) for x in right)
    low, at = min(hl, hr), _at(d, value)
    depth = float(np.clip(1.0 - at / low, 0.0, 1.0)) if low > 0 else 0.0
    return depth, float(max(low - at, 0.0) / d.y.max())


def assess(method: str, values: np.ndarray | None, value: float, window: tuple[float, float],
           side: str = "min", fallback: str | None = None) -> BoundEvidence:
    """The evidence of bound ``value`` placed by ``method`` on ``values`` (gate units) with search
    ``window``; ``side``: ``"min"`` (the gate lies above) or ``"max"``. Checks (a)-(c) of the
    module's docstring set ``sure`` and ``reason``; (c) applies
    to valley bounds only (the other methods do not split two populations)."""
    lo, hi = float(window[0]), float(window[1])
    width = max(hi - lo, 1e-12)
    edge = min(abs(value - lo), abs(hi - value))
    v = values[np.isfinite(values)] if values is not None else np.array([])
    if v.size < MIN_EVENTS:
        return BoundEvidence(method, float(value), (lo, hi), float(edge), fallback=fallback)
    d = _axis_density(v, (lo, hi))
    modes = _modes(d)
    top = float(d.y.max())
    at = _at(d, value)
    ratio = at / top if top > 0 else 0.0
    depth, prom = _valley_shape(d, modes, value)
    reasons = []
    near = max(EDGE_FRACTION * width, 2 * d.step)
    deep = depth is not None and depth >= DEEP_VALLEY
    if edge <= near and ratio > EMPTY_FRACTION and not deep:
        # The edge the bound sits on, and whether the density keeps falling beyond it (the
        # minimum the search wanted lies outside the window).
        e = lo if abs(value - lo) <= abs(hi - value) else hi
        beyond = d.x[(d.x > e) & (d.x <= e + width)] if e == hi else d.x[(d.x < e) & (d.x >= e - width)]
        if beyond.size and min(_at(d, x) for x in beyond) < at:
            reasons.append(f"{value:.3f} on the edge of its search window [{lo:.2f}, {hi:.2f}], "
                           "the density still falling beyond it")
    if ratio > DENSE_FRACTION:
        reasons.append(f"density at the cut {ratio:.2f} of the parent's peak (through a population)")
    # The window's part the cut excludes from the gate (below a min, above a max).
    out = (d.x >= lo) & (d.x < value) if side == "min" else (d.x > value) & (d.x <= hi)
    kept_modes = modes[modes > value] if side == "min" else modes[modes < value]
    crowd = float(d.y[out].max()) / top if out.any() and top > 0 else 0.0
    far = abs(hi - value) <= near if side == "min" else abs(value - lo) <= near
    if method == "valley" and far and not kept_modes.size and crowd > DENSE_FRACTION:
        # A valley window is where the template expects the gap between two populations. Events
        # denser than half the parent's peak in the part of it the gate leaves out are a
        # population there; the search ran to the window's far edge, away from it, and with no
        # population on the gate's side the gate lost it.
        reasons.append(f"a population inside the search window [{lo:.2f}, {hi:.2f}] (density up to "
                       f"{crowd:.2f} of the peak) left out, and none in the gate")
    reason = "; ".join(reasons) or None
    return BoundEvidence(method, float(value), (lo, hi), float(edge), depth, prom, float(ratio), fallback,
                         reason is None, reason)


def tail_evidence(values: np.ndarray, value: float, window: tuple[float, float], *, clipped: bool) -> BoundEvidence:
    """The evidence of a tail cut (the upper end of one population, ``mode + k`` robust SDs; gate
    units), judged over the whole axis rather than by a valley, for there is none: above a
    population that thins into a tail (lymphocytes' FSC among few low-SSC cells after
    lymphodepletion), the deepest point in a window is wherever the tail is lowest, often its edge.

    Sure when (a) the cut was not clipped to its window (a population whose upper end lies outside
    the window is not the one the template drew the gate around), (b) a population lies below the
    cut and the density at the cut is at most :data:`TAIL_FRACTION` of its peak, (c) no other
    population lies between that population's mode and the cut (the cut would then run past it),
    and (d) no unresolved population merges into its upper side (:data:`TAIL_SYMMETRY`)."""
    lo, hi = float(window[0]), float(window[1])
    edge = min(abs(value - lo), abs(hi - value))
    v = values[np.isfinite(values)]
    if v.size < MIN_EVENTS:
        return BoundEvidence("tail", float(value), (lo, hi), float(edge), sure=False,
                             reason=f"only {v.size} events to place a tail cut on")
    d = _axis_density(v, (lo, hi))
    modes = _modes(d)
    below = modes[modes < value]
    reasons = []
    ratio = None
    if clipped:
        reasons.append(f"the population's upper end lies outside the window [{lo:.2f}, {hi:.2f}], "
                       f"clipped to {value:.3f}")
    if not below.size:
        reasons.append(f"no population below the tail cut {value:.3f}")
    else:
        pop = float(below[np.argmax([_at(d, x) for x in below])])
        peak = _at(d, pop)
        ratio = _at(d, value) / peak if peak > 0 else 1.0
        if ratio > TAIL_FRACTION:
            reasons.append(f"density at the tail cut {value:.3f} is {ratio:.2f} of its population's peak "
                           f"(> {TAIL_FRACTION}: still in the population)")
        between = below[below > pop]
        if between.size:
            reasons.append(f"another population at {between[0]:.3f} lies between the population ({pop:.3f}) "
                           f"and the tail cut {value:.3f}")
        reach = value - pop
        upper = int(np.count_nonzero((v > pop) & (v <= value)))
        lower = int(np.count_nonzero((v >= pop - reach) & (v < pop)))
        if upper > TAIL_SYMMETRY * lower and upper - lower >= RARE_EVENTS:
            reasons.append(f"{upper} events between the population's mode {pop:.3f} and the tail cut, against "
                           f"{lower} as far below it: another population merges into its upper side")
    reason = "; ".join(reasons) or None
    return BoundEvidence("tail", float(value), (lo, hi), float(edge), density_ratio=ratio, sure=reason is None,
                         reason=reason)


def populations_modes(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Positions (gate units, ascending) of the populations over the whole axis."""
    v = values[np.isfinite(values)]
    return _modes(_axis_density(v, window)) if v.size >= MIN_EVENTS else np.array([])


def populations_valley(values: np.ndarray, window: tuple[float, float], *,
                       above_lowest: bool = False) -> tuple[float | None, str]:
    """A valley placed from the populations: the modes over the whole axis, then the deepest
    density minimum between each pair of adjacent modes, and among those the one nearest the
    ``window`` (the template's prior; inside it counts as distance 0, ties to the deepest), or
    with ``above_lowest`` the one just above the lowest population (the negative one).

    Returns (cut in gate units, or None when fewer than two populations are found; a note)."""
    v = values[np.isfinite(values)]
    if v.size < MIN_EVENTS:
        return None, f"populations: too few events ({v.size})"
    d = _axis_density(v, window)
    modes = _modes(d)
    if modes.size < 2:
        return None, f"populations: {modes.size} mode(s) on the axis, no valley between two"
    lo, hi = window
    best: tuple[float, float, float] | None = None  # (distance to the window, -depth, cut)
    pairs = list(zip(modes[:-1], modes[1:]))
    for a, b in pairs[:1] if above_lowest else pairs:
        cut = valley_between(d, float(a), float(b))
        if cut is None:
            continue
        depth, _ = _valley_shape(d, np.array([a, b]), cut)
        dist = max(lo - cut, cut - hi, 0.0)
        key = (dist, -(depth or 0.0), cut)
        best = key if best is None or key < best else best
    if best is None:
        return None, "populations: no valley between the modes"
    modes_txt = ", ".join(f"{m:.2f}" for m in modes)
    return best[2], f"populations at {modes_txt}: valley {best[2]:.3f} (depth {-best[1]:.2f})"



def negative_mode(parent_values: np.ndarray, window: tuple[float, float]) -> float | None:
    """Where the negative population sits on this axis: the lowest mode of the parent's events
    (gate units), or None with too few events. Taken from the parent (e.g. every nucleated cell),
    not from the events the bound is placed on: a CD138+ selection may hold no CD38-negative cell
    at all, and its lowest mode is then the dimmest plasma-cell population."""
    v = parent_values[np.isfinite(parent_values)]
    if v.size < MIN_EVENTS:
        return None
    modes = _modes(_axis_density(v, window))
    return float(modes[0]) if modes.size else None


def missed_population(values: np.ndarray, cut: float, window: tuple[float, float],
                      negative: float | None) -> str | None:
    """For a min bound whose rule says "every event above the negative population is positive"
    (its fallback is ``above_negative``): the reason the cut is wrong when a population of the
    events the bound is placed on lies above the ``negative`` population (:func:`negative_mode`)
    and below both the cut and the window, else None.

    A valley found inside the window can be deep and clean and still be the wrong valley: when the
    positive population sits below the window (CD38-dim plasma cells after anti-CD38 therapy, or a
    whole instrument's scale shifted), the search finds the empty tail above it, and the gate loses
    the population it exists for.
    """
    v = values[np.isfinite(values)]
    if negative is None or v.size < MIN_EVENTS:
        return None
    modes = _modes(_axis_density(v, window))
    between = [float(m) for m in modes if negative < m < cut and m < window[0]]
    if not between:
        return None
    return (f"a population at {between[0]:.2f} lies between the negative population ({negative:.2f}) "
            f"and the cut {cut:.3f}, below the window [{window[0]:.2f}, {window[1]:.2f}]")


def above_negative_cut(values: np.ndarray, window: tuple[float, float],
                       negative: float | None) -> tuple[float | None, str]:
    """The cut just above the negative population: the density minimum of ``values`` (the events
    the bound is placed on) between the ``negative`` mode (:func:`negative_mode`, from the parent)
    and the lowest population of ``values`` above it. Every event above the cut is positive,
    however dim. Returns (cut in gate units, or None when there is no such population; a note)."""
    v = values[np.isfinite(values)]
    if negative is None:
        return None, "above_negative: no negative population in the parent"
    if v.size < MIN_EVENTS:
        return None, f"above_negative: too few events ({v.size})"
    d = _axis_density(v, window)
    above = [float(m) for m in _modes(d) if m > negative]
    if not above:
        return None, f"above_negative: no population above the negative one ({negative:.2f})"
    sel = (d.x >= negative) & (d.x <= above[0])
    cut = float(d.x[sel][np.argmin(d.y[sel])])
    return cut, (f"above_negative: negative population {negative:.2f}, lowest population above it "
                 f"{above[0]:.2f}: density minimum {cut:.3f} between them")


def rise_depth(values: np.ndarray, cut: float, window: tuple[float, float]) -> tuple[float | None, float | None]:
    """(depth, prominence) of a one-sided valley: how far the density of ``values`` at ``cut``
    lies below the nearest population above it (``1 - density(cut) / density(mode)``; prominence
    as a fraction of the peak), or (None, None) when no population lies above the cut.

    An ``above_negative`` cut sits between the negative population, found in the parent's
    non-candidate events, and the candidates' lowest population; the candidates themselves need
    not hold any negative events, so their density has no population below the cut and the
    two-sided depth of :func:`assess` is undefined. The rise from the cut to the population the
    gate keeps is then the evidence that the cut lies in a gap and not through that population."""
    v = values[np.isfinite(values)]
    if v.size < MIN_EVENTS:
        return None, None
    d = _axis_density(v, window)
    above = _modes(d)
    above = above[above > cut]
    if not above.size:
        return None, None
    peak, at = _at(d, float(above[0])), _at(d, cut)
    if peak <= 0:
        return None, None
    return float(np.clip(1.0 - at / peak, 0.0, 1.0)), float(max(peak - at, 0.0) / d.y.max())


def brightest_valley(values: np.ndarray, window: tuple[float, float]
                     ) -> tuple[float | None, float | None, float | None, str]:
    """The cut below the brightest population on the axis: the populations over the whole axis
    (density modes, as :func:`populations_modes`), then the density minimum between the brightest
    and the one below it, raised to the brightest population's lower edge when an empty stretch
    separates it from the events below (:data:`EDGE_GAP_SDS`; its spread: the robust SD of the
    events between the valley and its mode). Rare events in the gap that form no population of
    their own (T cells stained on every shared channel) then stay below the cut with whatever else
    lies below (negative cells alone, or negative and stained cells on a channel counting beads
    share with a marker).

    Returns (the cut, or None when fewer than two populations are found; the valley it was raised
    from (judge the gap by it: the axis density, smoothed for every event, does not resolve a tight
    population's edge); the brightest population's position, or None without one; a note)."""
    v = values[np.isfinite(values)]
    if v.size < MIN_EVENTS:
        return None, None, None, f"brightest: too few events ({v.size})"
    d = _axis_density(v, window)
    modes = _modes(d)
    top = float(modes[-1]) if modes.size else None
    if modes.size < 2:
        return None, None, top, f"brightest: {modes.size} population(s) on the axis, no valley below the brightest"
    cut = valley = valley_between(d, float(modes[-2]), float(modes[-1]))
    if valley is None:
        return None, None, top, "brightest: no valley between the two brightest populations"
    modes_txt = ", ".join(f"{m:.2f}" for m in modes)
    note = f"brightest: populations at {modes_txt}: valley {cut:.3f} below the brightest"
    lower = np.sort(v[(v > cut) & (v <= top)])
    if lower.size >= MIN_EVENTS:
        sd = 1.4826 * float(np.median(top - lower))  # half-normal: median |x - mode| = 0.674 SD
        wide = np.flatnonzero(np.diff(lower) > EDGE_GAP_SDS * sd)
        if wide.size:
            i = int(wide[-1])
            cut = 0.5 * float(lower[i] + lower[i + 1])
            note += (f", raised to its lower edge {cut:.3f} (an empty stretch of {lower[i + 1] - lower[i]:.3f} > "
                     f"{EDGE_GAP_SDS:g} x its robust SD {sd:.3f} below its events)")
    return cut, valley, top, note
